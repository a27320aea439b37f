import type { Command, Option } from "commander";

/** Every flag an option answers to (`-c`, `--config`). */
const flagsOf = (o: Option): string[] => [o.short, o.long].filter((f): f is string => Boolean(f));

/** Options whose value is a file, for which bash should complete paths. */
const takesFile = (o: Option): boolean => /<(file|path)>/.test(o.flags);

function words(cmd: Command): string {
  const subs = cmd.commands.map((c) => c.name());
  const flags = cmd.options.flatMap(flagsOf);
  return [...subs, ...flags, "--help"].join(" ");
}

/**
 * A bash completion script for `program`, generated from its commander definition so it never
 * drifts from the CLI: subcommands (two levels, as `ferry users add`), their flags, and file
 * names after flags that take a file.
 */
export function bashCompletion(program: Command): string {
  const name = program.name();
  const fn = `_${name.replace(/[^A-Za-z0-9_]/g, "_")}_complete`;
  const cases: string[] = [];
  const fileFlags = new Set<string>();
  const visit = (cmd: Command, path: string[]): void => {
    for (const o of cmd.options) if (takesFile(o)) for (const f of flagsOf(o)) fileFlags.add(f);
    cases.push(`    "${path.join(" ")}") words="${words(cmd)}" ;;`);
    for (const sub of cmd.commands) visit(sub, [...path, sub.name()]);
  };
  visit(program, []);
  const subcommandNames = new Set<string>();
  const collect = (cmd: Command): void => {
    for (const sub of cmd.commands) {
      subcommandNames.add(sub.name());
      collect(sub);
    }
  };
  collect(program);
  return `# bash completion for ${name}; generated from its command definitions by \`${name} completion bash\`.
# Install: ${name} completion bash > /etc/bash_completion.d/${name}  (or source it from ~/.bashrc)
${fn}() {
  local cur prev path="" w words i
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  case "$prev" in
    ${[...fileFlags].join("|")}) COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
  esac
  # The subcommand path so far: the words before the cursor that name subcommands.
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case "$w" in
      ${[...subcommandNames].join("|")}) path="\${path:+$path }$w" ;;
    esac
  done
  case "$path" in
${cases.join("\n")}
    *) words="" ;;
  esac
  COMPREPLY=( $(compgen -W "$words" -- "$cur") )
}
complete -o default -F ${fn} ${name}
`;
}
