// grpc/health/v1/health.proto as a descriptor, for reflection.

import { create } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";

/**
 * grpc/health/v1/health.proto, the part grpc-health-check serves (Check, Watch).
 * Written out because the descriptor protobufjs derives from that package's
 * .proto names its map entry wrongly, and Go clients such as grpcurl reject it.
 */
export function healthFile(): FileDescriptorProto {
  const optional = FieldDescriptorProto_Label.OPTIONAL;
  const pkg = ".grpc.health.v1";
  return create(FileDescriptorProtoSchema, {
    name: "grpc/health/v1/health.proto",
    package: "grpc.health.v1",
    syntax: "proto3",
    messageType: [
      {
        name: "HealthCheckRequest",
        field: [
          {
            name: "service",
            jsonName: "service",
            number: 1,
            label: optional,
            type: FieldDescriptorProto_Type.STRING,
          },
        ],
      },
      {
        name: "HealthCheckResponse",
        field: [
          {
            name: "status",
            jsonName: "status",
            number: 1,
            label: optional,
            type: FieldDescriptorProto_Type.ENUM,
            typeName: `${pkg}.HealthCheckResponse.ServingStatus`,
          },
        ],
        enumType: [
          {
            name: "ServingStatus",
            value: ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"].map((name, number) => ({
              name,
              number,
            })),
          },
        ],
      },
    ],
    service: [
      {
        name: "Health",
        method: [
          {
            name: "Check",
            inputType: `${pkg}.HealthCheckRequest`,
            outputType: `${pkg}.HealthCheckResponse`,
          },
          {
            name: "Watch",
            inputType: `${pkg}.HealthCheckRequest`,
            outputType: `${pkg}.HealthCheckResponse`,
            serverStreaming: true,
          },
        ],
      },
    ],
    options: { goPackage: "google.golang.org/grpc/health/grpc_health_v1" },
  });
}
