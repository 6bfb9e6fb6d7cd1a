// Export: every key's active generation (store.listActive, a page at a time) through an export
// writer. The records are opened under the source store's keyring and sealed again under the
// export's key, so a file exported from one keyring imports under any other.

import type { TokenStore } from "../core/token-store.ts";
import type { ExportCounts, ExportWriter } from "./export-file.ts";

export interface ExportStoreOptions {
  readonly store: TokenStore;
  readonly writer: ExportWriter;
  /** Keys per page and per chunk of the file. */
  readonly pageSize: number;
  readonly signal?: AbortSignal | undefined;
  /** Called after each page with the counts so far. */
  readonly onProgress?: ((records: number) => void) | undefined;
}

export async function exportStore(opts: ExportStoreOptions): Promise<ExportCounts> {
  let after: string | undefined;
  let records = 0;
  do {
    const page = await opts.store.listActive(
      { after, limit: opts.pageSize },
      { signal: opts.signal },
    );
    if (page.records.length > 0) await opts.writer.write(page.records);
    records += page.records.length;
    opts.onProgress?.(records);
    after = page.next;
  } while (after !== undefined);
  return opts.writer.end();
}
