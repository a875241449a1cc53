/** Root options that take a value, so the command name can be found after them. */
const ROOT_OPTIONS_WITH_VALUE = new Set(['-f', '--config', '--log-level']);

/** The command group an argv (without node and script) names: `mgr -f x.toml upgrade plan` → "upgrade". */
export function commandName(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (ROOT_OPTIONS_WITH_VALUE.has(a)) i++;
    else if (!a.startsWith('-')) return a === 'help' ? argv[i + 1] : a;
  }
  return undefined;
}
