// Server reflection (grpc.reflection.v1 and v1alpha) through @grpc/reflection,
// serving the services' descriptors with their comments, and grpc.health.v1.

import { create, type DescFile, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import * as protoLoader from "@grpc/proto-loader";
import { healthFile } from "./health-descriptor.ts";
import type { ServiceRegistration } from "./service-registration.ts";

/** The services' files and their imports, from the descriptors compiled into gen/. */
export function descriptorSetOf(services: readonly ServiceRegistration[]): Uint8Array {
  const files = new Map<string, DescFile>();
  const add = (f: DescFile) => {
    if (files.has(f.proto.name)) return;
    files.set(f.proto.name, f);
    f.dependencies.forEach(add);
  };
  for (const s of services) add(s.desc.file);
  return toBinary(
    FileDescriptorSetSchema,
    create(FileDescriptorSetSchema, { file: [...files.values()].map((f) => f.proto) }),
  );
}

/**
 * A proto-loader package definition for @grpc/reflection, with grpc.health.v1
 * added so grpcurl can call the health service too. proto-loader re-encodes
 * files through protobufjs and drops their source info (the comments), so the
 * files it lists are swapped for the original bytes of the descriptor set.
 */
export function reflectionPackage(descriptorSet: Uint8Array): protoLoader.PackageDefinition {
  const files = fromBinary(FileDescriptorSetSchema, descriptorSet).file;
  if (!files.some((f) => f.package === "grpc.health.v1")) files.push(healthFile());
  const originals = files.map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f)));
  const pkg = protoLoader.loadFileDescriptorSetFromBuffer(
    Buffer.from(
      toBinary(FileDescriptorSetSchema, create(FileDescriptorSetSchema, { file: files })),
    ),
  );
  for (const [name, def] of Object.entries(pkg)) {
    // Message and enum entries list files; service entries do not.
    if ("fileDescriptorProtos" in def && Array.isArray(def.fileDescriptorProtos)) {
      pkg[name] = Object.assign({}, def, { fileDescriptorProtos: originals });
    }
  }
  return pkg;
}
