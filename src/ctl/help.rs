//! The usage text etcdctl 3.4 prints for `--help` and after a flag it
//! does not know (cobra's usage through etcdctl's template and Go's
//! `text/tabwriter`): each command's name, synopsis, description and flags,
//! then the global flags.

/// One command's usage: its words, one-line summary, synopsis (after the
/// program name), description lines and flags (as listed, with defaults).
pub struct Help {
    pub path: &'static str,
    pub short: &'static str,
    pub usage: &'static str,
    pub long: &'static [&'static str],
    pub flags: &'static [(&'static str, &'static str)],
}

/// Go's `tabwriter` (min width 0, tab width 8, padding 1, padded with
/// tabs) over `text`, whose lines hold at most one tab: in each run of
/// lines with a tab, the text before it is padded with tabs to one column.
pub fn tabwriter(text: &str) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].contains('\t') {
            out.push_str(lines[i]);
            if i + 1 < lines.len() {
                out.push('\n');
            }
            i += 1;
            continue;
        }
        let mut j = i;
        while j < lines.len() && lines[j].contains('\t') {
            j += 1;
        }
        let cell = |l: &str| l.split('\t').next().unwrap_or("").chars().count();
        let width = lines[i..j].iter().map(|l| cell(l)).max().unwrap_or(0) + 1;
        let width = width.div_ceil(8) * 8;
        for (k, l) in lines[i..j].iter().enumerate() {
            let (first, rest) = l.split_once('\t').unwrap_or((l, ""));
            out.push_str(first);
            out.push_str(&"\t".repeat((width - cell(l)).div_ceil(8)));
            out.push_str(rest);
            if i + k + 1 < lines.len() {
                out.push('\n');
            }
        }
        i = j;
    }
    out
}

/// etcdctl's command groups (commands that only hold subcommands): name,
/// summary, synopsis after the program name.
pub const GROUPS: &[(&str, &str, &str)] = &[
    (
        "alarm",
        "Alarm related commands",
        "alarm <subcommand> [flags]",
    ),
    (
        "auth",
        "Enable or disable authentication",
        "auth <enable or disable> [flags]",
    ),
    (
        "check",
        "commands for checking properties of the etcd cluster",
        "check <subcommand> [flags]",
    ),
    (
        "endpoint",
        "Endpoint related commands",
        "endpoint <subcommand> [flags]",
    ),
    (
        "lease",
        "Lease related commands",
        "lease <subcommand> [flags]",
    ),
    (
        "member",
        "Membership related commands",
        "member <subcommand> [flags]",
    ),
    ("role", "Role related commands", "role <subcommand> [flags]"),
    (
        "snapshot",
        "Manages etcd node snapshots",
        "snapshot <subcommand> [flags]",
    ),
    ("user", "User related commands", "user <subcommand> [flags]"),
];

/// A command's one-line summary.
fn short(path: &str) -> Option<&'static str> {
    HELPS
        .iter()
        .chain(super::auth::HELPS)
        .find(|h| h.path == path)
        .map(|h| h.short)
}

/// cobra's command list: `name<TAB>summary` lines aligned as one block,
/// each behind a tab.
fn command_list(rows: &[(String, &str)]) -> String {
    let block: Vec<String> = rows.iter().map(|(n, s)| format!("{n}\t{s}")).collect();
    let mut out = String::new();
    for line in tabwriter(&block.join("\n")).split('\n') {
        out += &format!("\t{line}\n");
    }
    out
}

/// The global flags' lines, with `help` (for `name`) in its sorted place
/// when given.
fn global_flags(help_for: Option<&str>) -> String {
    let mut t = String::new();
    let mut help = help_for.map(|n| format!("  -h, --help[=false]\thelp for {n}\n"));
    for (f, u) in GLOBAL_HELP {
        let long = f.split("--").nth(1).unwrap_or("");
        if long > "help" {
            if let Some(h) = help.take() {
                t += &h;
            }
        }
        t += &format!("{f}\t{u}\n");
    }
    t
}

/// What etcdctl prints for a command group named without (or with an
/// unknown) subcommand, or with `--help`: its subcommands (`subs`, as
/// `program` has them) and flags.
pub fn group_usage(group: &str, subs: &[&str], program: &str) -> Option<String> {
    let (name, summary, synopsis) = GROUPS.iter().find(|g| g.0 == group)?;
    let mut rows: Vec<(String, &str)> = subs
        .iter()
        .map(|s| (s.to_string(), short(&format!("{group} {s}")).unwrap_or("")))
        .collect();
    rows.sort();
    let head = format!(
        "NAME:\n\t{name} - {summary}\n\nUSAGE:\n\t{program} {synopsis}\n\nAPI VERSION:\n\t3.4\n\n\nCOMMANDS:\n"
    );
    // The endpoint commands' persistent flag comes first.
    let own = if *name == "endpoint" {
        "      --cluster[=false]\tuse all endpoints from the cluster member list\n"
    } else {
        ""
    };
    let tail = format!(
        "\nOPTIONS:\n{own}  -h, --help[=false]\thelp for {name}\n\nGLOBAL OPTIONS:\n{}\n",
        global_flags(None)
    );
    Some(tabwriter(&head) + &command_list(&rows) + &tabwriter(&tail))
}

/// What etcdctl prints with no command, `--help` or `help`: every command
/// (`paths`, as `program` has them, plus `help`) and the global flags
/// (`with_help`: the help flag among them, as cobra lists it once it has
/// parsed the command line).
pub fn top_usage(paths: &[String], program: &str, version: &str, with_help: bool) -> String {
    let version_line = format!("Prints the version of {program}");
    let mut rows: Vec<(String, &str)> = paths
        .iter()
        .map(|p| match p.as_str() {
            "version" => (p.clone(), version_line.as_str()),
            _ => (p.clone(), short(p).unwrap_or("")),
        })
        .collect();
    rows.push(("help".into(), "Help about any command"));
    rows.sort();
    let head = format!(
        "NAME:\n\t{program} - A simple command line client for etcd3.\n\nUSAGE:\n\t{program} [flags]\n\nVERSION:\n\t{version}\n\nAPI VERSION:\n\t3.4\n\n\nCOMMANDS:\n"
    );
    let tail = format!(
        "\nOPTIONS:\n{}\n",
        global_flags(with_help.then_some(program))
    );
    tabwriter(&head) + &command_list(&rows) + &tabwriter(&tail)
}

/// The usage of the command `path` as `program` prints it.
pub fn usage(path: &str, program: &str) -> Option<String> {
    let h = HELPS
        .iter()
        .chain(super::auth::HELPS)
        .find(|h| h.path == path)?;
    let mut t = format!(
        "NAME:\n\t{} - {}\n\nUSAGE:\n\t{program} {}\n",
        h.path, h.short, h.usage
    );
    if !h.long.is_empty() {
        t += "\nDESCRIPTION:\n";
        for l in h.long {
            t += &format!("\t{l}\n");
        }
    }
    t += "\nOPTIONS:\n";
    for (f, u) in h.flags {
        t += &format!("{f}\t{u}\n");
    }
    t += "\nGLOBAL OPTIONS:\n";
    for (f, u) in GLOBAL_HELP {
        t += &format!("{f}\t{u}\n");
    }
    t += "\n";
    Some(tabwriter(&t))
}

pub const HELPS: &[Help] = &[
    Help {
        path: "get",
        short: "Gets the key or a range of keys",
        usage: "get [options] <key> [range_end] [flags]",
        long: &[],
        flags: &[
            ("      --consistency=\"l\"", "Linearizable(l) or Serializable(s)"),
            ("      --from-key[=false]", "Get keys that are greater than or equal to the given key using byte compare"),
            ("  -h, --help[=false]", "help for get"),
            ("      --keys-only[=false]", "Get only the keys"),
            ("      --limit=0", "Maximum number of results"),
            ("      --order=\"\"", "Order of results; ASCEND or DESCEND (ASCEND by default)"),
            ("      --prefix[=false]", "Get keys with matching prefix"),
            ("      --print-value-only[=false]", "Only write values when using the \"simple\" output format"),
            ("      --rev=0", "Specify the kv revision"),
            ("      --sort-by=\"\"", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION"),
        ],
    },
    Help {
        path: "put",
        short: "Puts the given key into the store",
        usage: "put [options] <key> <value> (<value> can also be given from stdin) [flags]",
        long: &["Puts the given key into the store.", "", "When <value> begins with '-', <value> is interpreted as a flag.", "Insert '--' for workaround:", "", "$ put <key> -- <value>", "$ put -- <key> <value>", "", "If <value> isn't given as a command line argument and '--ignore-value' is not specified,", "this command tries to read the value from standard input.", "", "If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,", "this command tries to read the value from standard input.", "", "For example,", "$ cat file | put <key>", "will store the content of the file to <key>."],
        flags: &[
            ("  -h, --help[=false]", "help for put"),
            ("      --ignore-lease[=false]", "updates the key using its current lease"),
            ("      --ignore-value[=false]", "updates the key using its current value"),
            ("      --lease=\"0\"", "lease ID (in hexadecimal) to attach to the key"),
            ("      --prev-kv[=false]", "return the previous key-value pair before modification"),
        ],
    },
    Help {
        path: "del",
        short: "Removes the specified key or range of keys [key, range_end)",
        usage: "del [options] <key> [range_end] [flags]",
        long: &[],
        flags: &[
            ("      --from-key[=false]", "delete keys that are greater than or equal to the given key using byte compare"),
            ("  -h, --help[=false]", "help for del"),
            ("      --prefix[=false]", "delete keys with matching prefix"),
            ("      --prev-kv[=false]", "return deleted key-value pairs"),
        ],
    },
    Help {
        path: "txn",
        short: "Txn processes all the requests in one transaction",
        usage: "txn [options] [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for txn"),
            ("  -i, --interactive[=false]", "Input transaction in interactive mode"),
        ],
    },
    Help {
        path: "compaction",
        short: "Compacts the event history in etcd",
        usage: "compaction [options] <revision> [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for compaction"),
            ("      --physical[=false]", "'true' to wait for compaction to physically remove all old revisions"),
        ],
    },
    Help {
        path: "watch",
        short: "Watches events stream on keys or prefixes",
        usage: "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...] [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for watch"),
            ("  -i, --interactive[=false]", "Interactive mode"),
            ("      --prefix[=false]", "Watch on a prefix if prefix is set"),
            ("      --prev-kv[=false]", "get the previous key-value pair before the event happens"),
            ("      --rev=0", "Revision to start watching"),
        ],
    },
    Help {
        path: "lock",
        short: "Acquires a named lock",
        usage: "lock <lockname> [exec-command arg1 arg2 ...] [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for lock"),
            ("      --ttl=10", "timeout for session"),
        ],
    },
    Help {
        path: "elect",
        short: "Observes and participates in leader election",
        usage: "elect <election-name> [proposal] [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for elect"),
            ("  -l, --listen[=false]", "observation mode"),
        ],
    },
    Help {
        path: "lease grant",
        short: "Creates leases",
        usage: "lease grant <ttl> [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for grant"),
        ],
    },
    Help {
        path: "lease revoke",
        short: "Revokes leases",
        usage: "lease revoke <leaseID> [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for revoke"),
        ],
    },
    Help {
        path: "lease timetolive",
        short: "Get lease information",
        usage: "lease timetolive <leaseID> [options] [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for timetolive"),
            ("      --keys[=false]", "Get keys attached to this lease"),
        ],
    },
    Help {
        path: "lease list",
        short: "List all active leases",
        usage: "lease list [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for list"),
        ],
    },
    Help {
        path: "lease keep-alive",
        short: "Keeps leases alive (renew)",
        usage: "lease keep-alive [options] <leaseID> [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for keep-alive"),
            ("      --once[=false]", "Resets the keep-alive time to its original value and exits immediately"),
        ],
    },
    Help {
        path: "member add",
        short: "Adds a member into the cluster",
        usage: "member add <memberName> [options] [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for add"),
            ("      --learner[=false]", "indicates if the new member is raft learner"),
            ("      --peer-urls=\"\"", "comma separated peer URLs for the new member."),
        ],
    },
    Help {
        path: "member remove",
        short: "Removes a member from the cluster",
        usage: "member remove <memberID> [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for remove"),
        ],
    },
    Help {
        path: "member update",
        short: "Updates a member in the cluster",
        usage: "member update <memberID> [options] [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for update"),
            ("      --peer-urls=\"\"", "comma separated peer URLs for the updated member."),
        ],
    },
    Help {
        path: "member list",
        short: "Lists all members in the cluster",
        usage: "member list [flags]",
        long: &["When --write-out is set to simple, this command prints out comma-separated member lists for each endpoint.", "The items in the lists are ID, Status, Name, Peer Addrs, Client Addrs, Is Learner."],
        flags: &[
            ("  -h, --help[=false]", "help for list"),
        ],
    },
    Help {
        path: "member promote",
        short: "Promotes a non-voting member in the cluster",
        usage: "member promote <memberID> [flags]",
        long: &["Promotes a non-voting learner member to a voting one in the cluster."],
        flags: &[
            ("  -h, --help[=false]", "help for promote"),
        ],
    },
    Help {
        path: "endpoint health",
        short: "Checks the healthiness of endpoints specified in `--endpoints` flag",
        usage: "endpoint health [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for health"),
        ],
    },
    Help {
        path: "endpoint status",
        short: "Prints out the status of endpoints specified in `--endpoints` flag",
        usage: "endpoint status [flags]",
        long: &["When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.", "The items in the lists are endpoint, ID, version, db size, is leader, is learner, raft term, raft index, raft applied index, errors."],
        flags: &[
            ("  -h, --help[=false]", "help for status"),
        ],
    },
    Help {
        path: "endpoint hashkv",
        short: "Prints the KV history hash for each endpoint in --endpoints",
        usage: "endpoint hashkv [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for hashkv"),
            ("      --rev=0", "maximum revision to hash (default: all revisions)"),
        ],
    },
    Help {
        path: "alarm disarm",
        short: "Disarms all alarms",
        usage: "alarm disarm [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for disarm"),
        ],
    },
    Help {
        path: "alarm list",
        short: "Lists all alarms",
        usage: "alarm list [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for list"),
        ],
    },
    Help {
        path: "move-leader",
        short: "Transfers leadership to another etcd cluster member.",
        usage: "move-leader <transferee-member-id> [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for move-leader"),
        ],
    },
    Help {
        path: "version",
        short: "Prints the version of etcdctl",
        usage: "version [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for version"),
        ],
    },
    Help {
        path: "defrag",
        short: "Defragments the storage of the etcd members with given endpoints",
        usage: "defrag [flags]",
        long: &[],
        flags: &[
            ("      --cluster[=false]", "use all endpoints from the cluster member list"),
            ("      --data-dir=\"\"", "Optional. If present, defragments a data directory not in use by etcd."),
            ("  -h, --help[=false]", "help for defrag"),
        ],
    },
    Help {
        path: "make-mirror",
        short: "Makes a mirror at the destination etcd cluster",
        usage: "make-mirror [options] <destination> [flags]",
        long: &[],
        flags: &[
            ("      --dest-cacert=\"\"", "Verify certificates of TLS enabled secure servers using this CA bundle"),
            ("      --dest-cert=\"\"", "Identify secure client using this TLS certificate file for the destination cluster"),
            ("      --dest-insecure-transport[=true]", "Disable transport security for client connections"),
            ("      --dest-key=\"\"", "Identify secure client using this TLS key file"),
            ("      --dest-prefix=\"\"", "destination prefix to mirror a prefix to a different prefix in the destination cluster"),
            ("  -h, --help[=false]", "help for make-mirror"),
            ("      --no-dest-prefix[=false]", "mirror key-values to the root of the destination cluster"),
            ("      --prefix=\"\"", "Key-value prefix to mirror"),
        ],
    },
    Help {
        path: "check perf",
        short: "Check the performance of the etcd cluster",
        usage: "check perf [options] [flags]",
        long: &[],
        flags: &[
            ("      --auto-compact[=false]", "Compact storage with last revision after test is finished."),
            ("      --auto-defrag[=false]", "Defragment storage after test is finished."),
            ("  -h, --help[=false]", "help for perf"),
            ("      --load=\"s\"", "The performance check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)"),
            ("      --prefix=\"/etcdctl-check-perf/\"", "The prefix for writing the performance check's keys."),
        ],
    },
    Help {
        path: "check datascale",
        short: "Check the memory usage of holding data for different workloads on a given server endpoint.",
        usage: "check datascale [options] [flags]",
        long: &["If no endpoint is provided, localhost will be used. If multiple endpoints are provided, first endpoint will be used."],
        flags: &[
            ("      --auto-compact[=false]", "Compact storage with last revision after test is finished."),
            ("      --auto-defrag[=false]", "Defragment storage after test is finished."),
            ("  -h, --help[=false]", "help for datascale"),
            ("      --load=\"s\"", "The datascale check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)"),
            ("      --prefix=\"/etcdctl-check-datascale/\"", "The prefix for writing the datascale check's keys."),
        ],
    },
    Help {
        path: "snapshot save",
        short: "Stores an etcd node backend snapshot to a given file",
        usage: "snapshot save <filename> [flags]",
        long: &[],
        flags: &[
            ("  -h, --help[=false]", "help for save"),
        ],
    },
    Help {
        path: "snapshot status",
        short: "Gets backend snapshot status of a given file",
        usage: "snapshot status <filename> [flags]",
        long: &["When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.", "The items in the lists are hash, revision, total keys, total size."],
        flags: &[
            ("  -h, --help[=false]", "help for status"),
        ],
    },
    Help {
        path: "snapshot restore",
        short: "Restores an etcd member snapshot to an etcd directory",
        usage: "snapshot restore <filename> [options] [flags]",
        long: &[],
        flags: &[
            ("      --data-dir=\"\"", "Path to the data directory"),
            ("  -h, --help[=false]", "help for restore"),
            ("      --initial-advertise-peer-urls=\"http://localhost:2380\"", "List of this member's peer URLs to advertise to the rest of the cluster"),
            ("      --initial-cluster=\"default=http://localhost:2380\"", "Initial cluster configuration for restore bootstrap"),
            ("      --initial-cluster-token=\"etcd-cluster\"", "Initial cluster token for the etcd cluster during restore bootstrap"),
            ("      --name=\"default\"", "Human-readable name for this member"),
            ("      --skip-hash-check[=false]", "Ignore snapshot integrity hash value (required if copied from data directory)"),
            ("      --wal-dir=\"\"", "Path to the WAL directory (use --data-dir if none given)"),
        ],
    },
];

pub const GLOBAL_HELP: &[(&str, &str)] = &[
    ("      --cacert=\"\"", "verify certificates of TLS-enabled secure servers using this CA bundle"),
    ("      --cert=\"\"", "identify secure client using this TLS certificate file"),
    ("      --command-timeout=5s", "timeout for short running command (excluding dial timeout)"),
    ("      --debug[=false]", "enable client-side debug logging"),
    ("      --dial-timeout=2s", "dial timeout for client connections"),
    ("  -d, --discovery-srv=\"\"", "domain name to query for SRV records describing cluster endpoints"),
    ("      --discovery-srv-name=\"\"", "service name to query when using DNS discovery"),
    ("      --endpoints=[127.0.0.1:2379]", "gRPC endpoints"),
    ("      --hex[=false]", "print byte strings as hex encoded strings"),
    ("      --insecure-discovery[=true]", "accept insecure SRV records describing cluster endpoints"),
    ("      --insecure-skip-tls-verify[=false]", "skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)"),
    ("      --insecure-transport[=true]", "disable transport security for client connections"),
    ("      --keepalive-time=2s", "keepalive time for client connections"),
    ("      --keepalive-timeout=6s", "keepalive timeout for client connections"),
    ("      --key=\"\"", "identify secure client using this TLS key file"),
    ("      --password=\"\"", "password for authentication (if this option is used, --user option shouldn't include password)"),
    ("      --user=\"\"", "username[:password] for authentication (prompt if password is not supplied)"),
    ("  -w, --write-out=\"simple\"", "set the output format (fields, json, protobuf, simple, table)"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tabwriter_pads_each_run_of_lines_to_one_tab_stop() {
        assert_eq!(
            tabwriter("a\n\tb\n  --x=1\tc\n  --long-flag\td\n\nz\tq\n"),
            "a\n\t\tb\n  --x=1\t\tc\n  --long-flag\td\n\nz\tq\n"
        );
    }

    #[test]
    fn every_command_has_its_usage() {
        for (words, _) in super::super::COMMANDS {
            assert!(usage(&words.join(" "), "cairnctl").is_some(), "{words:?}");
        }
    }
}
