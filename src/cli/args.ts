import { parseArgs, type ParseArgsConfig } from 'node:util';

/** node:util parseArgs with errors that point at the command's --help. */
export function parse<T extends NonNullable<ParseArgsConfig['options']>>(command: string, argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (err) {
    throw new Error(`${(err as Error).message}\nSee 'policylayer ${command} --help'.`);
  }
}
