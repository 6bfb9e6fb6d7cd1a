// Server reflection (grpc.reflection.v1 and v1alpha) through @grpc/reflection,
// serving the services' descriptors with their comments, and grpc.health.v1.

import { create, type DescFile, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import type * as protoLoader from "@grpc/proto-loader";
import { healthFile } from "./health-descriptor.ts";
import { packageWithFiles } from "./library-internals.ts";
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
 * added so grpcurl can call the health service too, serving the files as they
 * are in the descriptor set (with their comments).
 */
export function reflectionPackage(descriptorSet: Uint8Array): protoLoader.PackageDefinition {
  const files = fromBinary(FileDescriptorSetSchema, descriptorSet).file;
  if (!files.some((f) => f.package === "grpc.health.v1")) files.push(healthFile());
  const originals = files.map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f)));
  const set = toBinary(FileDescriptorSetSchema, create(FileDescriptorSetSchema, { file: files }));
  return packageWithFiles(Buffer.from(set), originals);
}
