# syntax=docker/dockerfile:1
# tokenvend runs its .ts sources directly on Node 24 (type stripping): no build step.
# The base is the Node that package.json pins as a devDependency (the tests' Node);
# pin it by digest too where the registry is reachable.

FROM node:24.21.0-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only. --ignore-scripts: the postinstall only patches the
# lockfile for other platforms, and protobufjs's install script is a version check.
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force

FROM node:24.21.0-bookworm-slim
ENV NODE_ENV=production \
    TOKENVEND_GRPC_LISTEN=0.0.0.0:50051 \
    TOKENVEND_HTTP_LISTEN=0.0.0.0:8080
WORKDIR /app
# Owned by root, run as another user: the process cannot change its own code.
COPY --from=deps /app/node_modules ./node_modules
# package.json: "type": "module" makes Node load src/*.ts as ES modules.
COPY package.json ./
# gen/ holds the generated code and gen/tokenvend.binpb, read at start for reflection.
COPY gen ./gen
COPY src ./src
USER 10001:10001
# gRPC, Connect/HTTP, and metrics.prometheusListen when configured (k8s/ does).
EXPOSE 50051 50052 8080 9464
# Exec form: no shell at run time. The same flags as `npm start`.
CMD ["node", "--max-semi-space-size=4", "--import", "./src/telemetry/register.ts", "src/cli/main.ts", "serve"]
