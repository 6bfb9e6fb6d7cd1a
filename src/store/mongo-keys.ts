// The key check (docs/STORAGE.md, "Keys"): the `keys` collection holds one check value per key id
// (`_id` the key id, `check` the keyring's checkValue). At start every key of the ring is checked
// against it: a key id whose material differs from the one recorded is refused (SealingError
// KEY_MISMATCH), so a replica started with the right key id and the wrong key cannot write
// generations no other replica can read. A key id seen for the first time is recorded; replicas
// racing to record the same id insert the same value, and a loser reads and compares the winner's.

import type { Collection } from "mongodb";
import type { StoreCallOptions } from "../core/token-store.ts";
import { type MongoRun, withSignal } from "./mongo-command.ts";
import { isDuplicateKey } from "./mongo-errors.ts";
import { type Keyring, SealingError } from "./sealing.ts";

/** A key id's check value; `_id` is the key id. */
export interface KeyCheck {
  _id: string;
  check: string;
  createdAt: Date;
}

export async function checkKeys(
  keys: Collection<KeyCheck>,
  keyring: Keyring,
  run: MongoRun,
  now: () => number,
  callOpts?: StoreCallOptions,
): Promise<void> {
  for (const id of keyring.ids) {
    const check = keyring.checkValue(id);
    const recorded = await run("check key", callOpts, async (signal) => {
      const doc = await keys.findOne({ _id: id }, { signal });
      if (doc !== null) return doc.check;
      try {
        await keys.insertOne(
          { _id: id, check, createdAt: new Date(now()) },
          withSignal({}, signal),
        );
        return check;
      } catch (err) {
        if (!isDuplicateKey(err)) throw err;
      }
      return (await keys.findOne({ _id: id }, { signal }))?.check;
    });
    if (recorded !== check) {
      throw new SealingError(
        "KEY_MISMATCH",
        `key id "${id}" has other key material than the one this database recorded for it: ` +
          "every replica must have the same key under the same id (a new key needs a new id)",
      );
    }
  }
}
