// `npm run api-key -- ID`: a new API key for a caller outside any identity
// system. Prints the key once (give it to the caller; it is not kept) and the
// entry to add to the keys file (auth.apiKeys.file), which holds only its hash.
// Policy rules name the caller api-key:ID.

import { apiKeyIdShape, generateApiKey } from "./auth/index.ts";

const id = process.argv[2] ?? "";
if (!apiKeyIdShape.test(id)) {
  process.stderr.write(`usage: npm run api-key -- ID   (ID: ${apiKeyIdShape})\n`);
  process.exit(2);
}
const { key, entry } = generateApiKey(id);
process.stdout.write(
  [
    `key (shown once; the caller sends "authorization: Bearer <key>"):`,
    `  ${key}`,
    "",
    "entry for the keys file (auth.apiKeys.file), under keys:",
    `  - id: ${entry.id}`,
    `    sha256: ${entry.sha256}`,
    "    # expires: 2027-01-01T00:00:00Z",
    "",
    `policy rules name it: api-key:${entry.id}`,
    "",
  ].join("\n"),
);
