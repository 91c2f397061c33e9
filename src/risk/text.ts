// Splitting names and descriptions into words the lexicon can look up.

/** `getPullRequest`, `get_pull_request`, `API-get-user`, `kv.put` → lower-case words. */
export function nameWords(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w.length > 0);
}

/** Lower-case word tokens of free text (apostrophes kept inside words: don't, user's). */
export function textWords(text: string): string[] {
  return text.toLowerCase().match(/[a-z0-9]+(?:'[a-z]+)?/g) ?? [];
}

/** Collapses whitespace and lower-cases, for phrase matching. */
export function flat(text: string): string {
  return text.toLowerCase().replace(/\s+/g, ' ').trim();
}

/**
 * A verb form reduced to the lexicon's base form: creates → create, pushes → push,
 * queries → query. Only the third-person forms a description opens with ("Deletes a file");
 * past and -ing forms read as adjectives in names (`list_followed_projects`) and are left alone.
 */
export function verbBase(word: string): string[] {
  const out = [word];
  if (word.length > 4 && word.endsWith('ies')) out.push(word.slice(0, -3) + 'y');
  if (word.length > 4 && /(?:sh|ch|ss|x|z)es$/.test(word)) out.push(word.slice(0, -2));
  if (word.length > 3 && word.endsWith('s') && !word.endsWith('ss')) out.push(word.slice(0, -1));
  return out;
}

/**
 * The opening of a description with the boilerplate that precedes its verb removed:
 * "This tool will create a customer" → "create a customer"; "Notion | Retrieve a user" →
 * "retrieve a user"; "[Deprecated: …] Research any company" → "research any company".
 */
export function descriptionLead(description: string): string {
  let s = flat(description.replace(/<\/?[a-z_][a-z0-9_-]*>/gi, ' '));
  // Leading bracketed notes, warnings and emoji headings.
  for (let i = 0; i < 4; i++) {
    const before = s;
    s = s.replace(/^\[[^\]]*\]\s*/, '');
    s = s.replace(/^[^a-z0-9[]+/, '');
    s = s.replace(/^(?:deprecated|warning|note|important|purpose|guardrails)\s*:?\s*(?:\d+\.\s*)?/, '');
    s = s.replace(/^[a-z0-9 ]{1,40}\s\|\s+/, ''); // "Notion | Retrieve a user"
    if (s === before) break;
  }
  s = s.replace(
    /^(?:this (?:tool|endpoint|function|operation|method|command)\s+(?:will|can|is used to|helps(?: you)?(?: to)?|lets you|allows you to|is for)?\s*|use this (?:tool )?to\s+|use to\s+|tool (?:to|that)\s+|used to\s+|allows? (?:you |the user |agents? )?to\s+|lets? (?:you |agents? )?|helps? (?:you )?(?:to )?|a (?:tool|function) (?:to|that)\s+|you can\s+)/,
    '',
  );
  return s;
}
