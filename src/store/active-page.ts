// Paging for listActive over an adapter that holds its keys in memory (memory and file stores):
// key ids in code-unit order, the cursor being the last id of a page.

/** The ids of one page after `after`, and the cursor of the next page (undefined: the last). */
export function pageOfIds(
  ids: Iterable<string>,
  after: string | undefined,
  limit: number,
): { ids: string[]; next: string | undefined } {
  if (!Number.isSafeInteger(limit) || limit <= 0) {
    throw new RangeError(`limit must be a positive integer, got ${limit}`);
  }
  const rest = [...ids].filter((id) => after === undefined || id > after).sort();
  const page = rest.slice(0, limit);
  return { ids: page, next: rest.length > limit ? page.at(-1) : undefined };
}
