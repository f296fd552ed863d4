//! `auth enable | disable`, `user add | delete | get | list | passwd |
//! grant-role | revoke-role` and `role add | delete | get | list |
//! grant-permission | revoke-permission` as etcdctl 3.4 runs and prints
//! them, with its password prompts (speakeasy's: the prompt on stdout,
//! `stty -echo` around a line read from stdin) and `--interactive=false`
//! (Go's `fmt.Scanf("%s")`: one word from stdin).

use std::io::Read;

use cairn_proto::authpb::{permission::Type as PermType, Permission, UserAddOptions};
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserDeleteRequest, AuthUserGetRequest, AuthUserGrantRoleRequest, AuthUserListRequest,
    AuthUserRevokeRoleRequest, ResponseHeader,
};
use prost::Message;

use super::client::{Client, Global};
use super::flags::{switch, value, Flags, Spec};
use super::help::Help;
use super::kv::{prefix_end, unary};
use super::output::*;
use super::{out, Failure, EXIT_BAD_ARGS, EXIT_ERROR};

pub const USER_ADD_FLAGS: &[Spec] = &[
    switch("interactive"),
    value("new-user-password"),
    switch("no-password"),
];
pub const USER_GET_FLAGS: &[Spec] = &[switch("detail")];
pub const USER_PASSWD_FLAGS: &[Spec] = &[switch("interactive")];
pub const ROLE_PERM_FLAGS: &[Spec] = &[switch("prefix"), switch("from-key")];

fn bad_args(msg: impl Into<String>) -> Failure {
    Failure(EXIT_BAD_ARGS, msg.into())
}

// ---- reading passwords ----

/// One byte of stdin (`None` at its end).
fn read_byte(input: &mut impl Read) -> Option<u8> {
    let mut b = [0u8; 1];
    loop {
        match input.read(&mut b) {
            Ok(0) => return None,
            Ok(_) => return Some(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

/// Runs `stty ARG` on our own stdin, stdout and stderr, as speakeasy does
/// around a password (on a pipe stty says so on stderr, as it does for
/// etcdctl).
fn stty(arg: &str) -> Result<(), String> {
    let mut child = std::process::Command::new("stty")
        .arg(arg)
        .spawn()
        .map_err(|e| format!("stty binary not found:\n\t{e}"))?;
    let _ = child.wait();
    Ok(())
}

/// speakeasy's `Ask`: `prompt` on stdout, echo off, a line of stdin (to
/// its newline or the input's end, a trailing `\r` and surrounding white
/// space dropped), a newline on stdout, echo on.
pub fn ask(prompt: &str) -> Result<String, String> {
    let _ = out(prompt.as_bytes());
    stty("-echo")?;
    let mut line = Vec::new();
    let mut input = std::io::stdin().lock();
    while let Some(b) = read_byte(&mut input) {
        if b == b'\n' {
            break;
        }
        line.push(b);
    }
    drop(input);
    let _ = out(b"\n");
    let _ = stty("echo");
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).trim().to_owned())
}

/// etcdctl's `readPasswordInteractive`: asked twice, both the same.
fn ask_twice(name: &str) -> Result<String, Failure> {
    let first = ask(&format!("Password of {name}: "))
        .map_err(|e| bad_args(format!("failed to ask password: {e}")))?;
    if first.is_empty() {
        return Err(bad_args("empty password"));
    }
    let second = ask(&format!("Type password of {name} again for confirmation: "))
        .map_err(|e| bad_args(format!("failed to ask password: {e}")))?;
    if first != second {
        return Err(bad_args("given passwords are different"));
    }
    Ok(first)
}

/// Go's `fmt.Scanf("%s", &s)` on stdin: blanks skipped, a newline before
/// the word ends it empty, the word runs to the next white space (which is
/// read too).
pub fn scan_word(input: &mut impl Read) -> String {
    let mut word = Vec::new();
    while let Some(b) = read_byte(input) {
        if word.is_empty() {
            match b {
                b' ' | b'\t' | b'\r' | 0x0b | 0x0c => continue,
                b'\n' => break,
                _ => word.push(b),
            }
        } else if b.is_ascii_whitespace() || b == 0x0b {
            break;
        } else {
            word.push(b);
        }
    }
    String::from_utf8_lossy(&word).into_owned()
}

fn read_word() -> String {
    scan_word(&mut std::io::stdin().lock())
}

// ---- calls ----

/// One call of the Auth service, with the client's token, retried on the
/// next endpoint as every call is.
macro_rules! auth_call {
    ($c:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $c.call(|ctx| {
            let r = ctx.req(req.clone());
            async move {
                AuthClient::new(ctx.channel)
                    .$method(r)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }};
}

/// A response holding only its header, as each format prints it (`simple`
/// is `line`); `table` is not a format of the auth commands.
fn header_only(
    format: Format,
    h: &Option<ResponseHeader>,
    line: String,
    pb: Vec<u8>,
) -> Result<(), Failure> {
    let bytes = match format {
        Format::Simple => (line + "\n").into_bytes(),
        Format::Json => (obj(&[("header", opt_header(h))]) + "\n").into_bytes(),
        Format::Fields => header_fields_text(h).into_bytes(),
        Format::Protobuf => pb,
        Format::Table => return Err(format.unsupported()),
    };
    out(&bytes)
}

// ---- auth ----

pub fn auth(sub: &str, g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    if !args.is_empty() {
        return Err(bad_args(format!(
            "auth {sub} command does not accept any arguments"
        )));
    }
    let g = g.with_format(f)?;
    if sub == "enable" {
        unary(g, |mut c| async move {
            // Without a root role, etcdctl makes one, grants it to root
            // and tries again.
            loop {
                match auth_call!(c, auth_enable, AuthEnableRequest {}) {
                    Ok(_) => return Ok(()),
                    Err(e) if e == "etcdserver: root user does not have root role" => {
                        auth_call!(
                            c,
                            role_add,
                            AuthRoleAddRequest {
                                name: "root".into()
                            }
                        )?;
                        auth_call!(
                            c,
                            user_grant_role,
                            AuthUserGrantRoleRequest {
                                user: "root".into(),
                                role: "root".into(),
                            }
                        )?;
                    }
                    Err(e) => return Err(e),
                }
            }
        })?;
        out(b"Authentication Enabled\n")
    } else {
        unary(g, |mut c| async move {
            auth_call!(c, auth_disable, AuthDisableRequest {})
        })?;
        out(b"Authentication Disabled\n")
    }
}

// ---- user ----

pub fn user(sub: &str, g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    match sub {
        "add" => user_add(g, f, args),
        "delete" => {
            let [name] = args else {
                return Err(bad_args(
                    "user delete command requires user name as its argument",
                ));
            };
            let g = g.with_format(f)?;
            let req = AuthUserDeleteRequest { name: name.clone() };
            let r = unary(
                g.clone(),
                |mut c| async move { auth_call!(c, user_delete, req) },
            )?;
            header_only(
                g.format,
                &r.header,
                format!("User {name} deleted"),
                r.encode_to_vec(),
            )
        }
        "get" => user_get(g, f, args),
        "list" => {
            if !args.is_empty() {
                return Err(bad_args("user list command requires no arguments"));
            }
            let g = g.with_format(f)?;
            let r = unary(g.clone(), |mut c| async move {
                auth_call!(c, user_list, AuthUserListRequest {})
            })?;
            let bytes = match g.format {
                Format::Simple => r.users.iter().map(|u| format!("{u}\n")).collect::<String>(),
                Format::Json => {
                    obj(&[
                        ("header", opt_header(&r.header)),
                        ("users", nz_arr(r.users.iter().map(|u| jstr(u)).collect())),
                    ]) + "\n"
                }
                Format::Protobuf => return out(&r.encode_to_vec()),
                Format::Fields | Format::Table => return Err(g.format.unsupported()),
            };
            out(bytes.as_bytes())
        }
        "passwd" => {
            let [name] = args else {
                return Err(bad_args(
                    "user passwd command requires user name as its argument",
                ));
            };
            let password = if f.bool_or("interactive", true)? {
                ask_twice(name)?
            } else {
                read_word()
            };
            let g = g.with_format(f)?;
            let req = AuthUserChangePasswordRequest {
                name: name.clone(),
                password,
                hashed_password: String::new(),
            };
            let r = unary(g.clone(), |mut c| async move {
                auth_call!(c, user_change_password, req)
            })?;
            header_only(
                g.format,
                &r.header,
                "Password updated".into(),
                r.encode_to_vec(),
            )
        }
        "grant-role" => {
            let [name, role] = args else {
                return Err(bad_args(
                    "user grant command requires user name and role name as its argument",
                ));
            };
            let g = g.with_format(f)?;
            let req = AuthUserGrantRoleRequest {
                user: name.clone(),
                role: role.clone(),
            };
            let r = unary(g.clone(), |mut c| async move {
                auth_call!(c, user_grant_role, req)
            })?;
            header_only(
                g.format,
                &r.header,
                format!("Role {role} is granted to user {name}"),
                r.encode_to_vec(),
            )
        }
        _ => {
            let [name, role] = args else {
                return Err(bad_args(
                    "user revoke-role requires user name and role name as its argument",
                ));
            };
            let g = g.with_format(f)?;
            let req = AuthUserRevokeRoleRequest {
                name: name.clone(),
                role: role.clone(),
            };
            let r = unary(g.clone(), |mut c| async move {
                auth_call!(c, user_revoke_role, req)
            })?;
            header_only(
                g.format,
                &r.header,
                format!("Role {role} is revoked from user {name}"),
                r.encode_to_vec(),
            )
        }
    }
}

fn user_add(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let [arg] = args else {
        return Err(bad_args(
            "user add command requires user name as its argument",
        ));
    };
    let no_password = f.bool("no-password")?;
    let interactive = f.bool_or("interactive", true)?;
    let (name, password) = if no_password {
        (arg.clone(), String::new())
    } else {
        let given = f.str_or("new-user-password", "");
        if !given.is_empty() {
            (arg.clone(), given)
        } else {
            match arg.split_once(':') {
                None if interactive => (arg.clone(), ask_twice(arg)?),
                None => (arg.clone(), read_word()),
                Some(("", _)) => return Err(bad_args("empty user name is not allowed")),
                Some((n, p)) => (n.to_owned(), p.to_owned()),
            }
        }
    };
    let g = g.with_format(f)?;
    let req = AuthUserAddRequest {
        name: name.clone(),
        password,
        options: Some(UserAddOptions { no_password }),
        hashed_password: String::new(),
    };
    let r = unary(
        g.clone(),
        |mut c| async move { auth_call!(c, user_add, req) },
    )?;
    header_only(
        g.format,
        &r.header,
        format!("User {name} created"),
        r.encode_to_vec(),
    )
}

fn user_get(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let [name] = args else {
        return Err(bad_args(
            "user get command requires user name as its argument",
        ));
    };
    let detail = f.bool("detail")?;
    let g = g.with_format(f)?;
    let format = g.format;
    let name = name.clone();
    super::client::runtime()?.block_on(async move {
        let mut c = Client::new(g);
        c.ensure_login().await?;
        let failed = |e: String| Failure(EXIT_ERROR, e);
        let r =
            auth_call!(c, user_get, AuthUserGetRequest { name: name.clone() }).map_err(failed)?;
        if detail {
            // The name, then each role as `role get` prints it.
            out(format!("User: {name}\n").as_bytes())?;
            for role in &r.roles {
                out(b"\n")?;
                let rr = auth_call!(c, role_get, AuthRoleGetRequest { role: role.clone() })
                    .map_err(failed)?;
                print_role(format, role, &rr)?;
            }
            return Ok(());
        }
        let bytes = match format {
            Format::Simple => {
                let mut t = format!("User: {name}\nRoles:");
                for role in &r.roles {
                    t += &format!(" {role}");
                }
                (t + "\n").into_bytes()
            }
            Format::Json => (obj(&[
                ("header", opt_header(&r.header)),
                ("roles", nz_arr(r.roles.iter().map(|s| jstr(s)).collect())),
            ]) + "\n")
                .into_bytes(),
            Format::Protobuf => r.encode_to_vec(),
            Format::Fields | Format::Table => return Err(format.unsupported()),
        };
        out(&bytes)
    })
}

// ---- role ----

fn perm_type_name(t: i32) -> String {
    match PermType::try_from(t) {
        Ok(PermType::Read) => "READ".into(),
        Ok(PermType::Write) => "WRITE".into(),
        Ok(PermType::Readwrite) => "READWRITE".into(),
        Err(_) => t.to_string(),
    }
}

fn perm_json(p: &Permission) -> String {
    obj(&[
        ("permType", nz_i(i64::from(p.perm_type))),
        ("key", nz_bytes(&p.key)),
        ("range_end", nz_bytes(&p.range_end)),
    ])
}

/// `role get`'s answer in `format`.
fn print_role(format: Format, role: &str, r: &AuthRoleGetResponse) -> Result<(), Failure> {
    let bytes = match format {
        Format::Simple => {
            let mut t: Vec<u8> = format!("Role {role}\nKV Read:\n").into_bytes();
            let line = |p: &Permission, t: &mut Vec<u8>| {
                t.push(b'\t');
                if p.range_end.is_empty() {
                    t.extend_from_slice(&p.key);
                } else {
                    t.push(b'[');
                    t.extend_from_slice(&p.key);
                    t.extend_from_slice(b", ");
                    if p.range_end != b"\0" {
                        t.extend_from_slice(&p.range_end);
                        t.push(b')');
                    } else {
                        t.extend_from_slice(b"<open ended>");
                    }
                    if prefix_end(&p.key) == p.range_end {
                        t.extend_from_slice(b" (prefix ");
                        t.extend_from_slice(&p.key);
                        t.push(b')');
                    }
                }
                t.push(b'\n');
            };
            let read = [PermType::Read as i32, PermType::Readwrite as i32];
            let write = [PermType::Write as i32, PermType::Readwrite as i32];
            for p in r.perm.iter().filter(|p| read.contains(&p.perm_type)) {
                line(p, &mut t);
            }
            t.extend_from_slice(b"KV Write:\n");
            for p in r.perm.iter().filter(|p| write.contains(&p.perm_type)) {
                line(p, &mut t);
            }
            t
        }
        Format::Json => (obj(&[
            ("header", opt_header(&r.header)),
            ("perm", nz_arr(r.perm.iter().map(perm_json).collect())),
        ]) + "\n")
            .into_bytes(),
        Format::Fields => {
            let mut t = header_fields_text(&r.header);
            for p in &r.perm {
                t += &format!(
                    "\"PermType\" :  {}\n\"Key\" : {}\n\"RangeEnd\" : {}\n",
                    perm_type_name(p.perm_type),
                    go_quote_bytes(&p.key),
                    go_quote_bytes(&p.range_end)
                );
            }
            t.into_bytes()
        }
        Format::Protobuf => r.encode_to_vec(),
        Format::Table => return Err(format.unsupported()),
    };
    out(&bytes)
}

/// etcdctl's `permRange`: the key and range end of a permission from the
/// key (and end) given and `--prefix` / `--from-key`; an empty key is
/// `\0` (every key with either flag).
fn perm_range(f: &Flags, args: &[String]) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let (prefix, from_key) = (f.bool("prefix")?, f.bool("from-key")?);
    let exclusive = || bad_args("--from-key and --prefix flags are mutually exclusive");
    let key = args[0].as_bytes();
    if key.is_empty() {
        if prefix && from_key {
            return Err(exclusive());
        }
        let end = if prefix || from_key {
            vec![0]
        } else {
            Vec::new()
        };
        return Ok((vec![0], end));
    }
    let end = match args {
        [_] if prefix && from_key => return Err(exclusive()),
        [_] if prefix => prefix_end(key),
        [_] if from_key => vec![0],
        [_] => Vec::new(),
        _ if prefix => return Err(bad_args("unexpected endkey argument with --prefix flag")),
        _ if from_key => return Err(bad_args("unexpected endkey argument with --from-key flag")),
        _ => args[1].as_bytes().to_vec(),
    };
    Ok((key.to_vec(), end))
}

pub fn role(sub: &str, g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let one = |what: &str| -> Result<String, Failure> {
        match args {
            [name] => Ok(name.clone()),
            _ => Err(bad_args(format!(
                "role {what} command requires role name as its argument"
            ))),
        }
    };
    match sub {
        "add" => {
            let name = one("add")?;
            let g = g.with_format(f)?;
            let req = AuthRoleAddRequest { name: name.clone() };
            let r = unary(
                g.clone(),
                |mut c| async move { auth_call!(c, role_add, req) },
            )?;
            header_only(
                g.format,
                &r.header,
                format!("Role {name} created"),
                r.encode_to_vec(),
            )
        }
        "delete" => {
            let role = one("delete")?;
            let g = g.with_format(f)?;
            let req = AuthRoleDeleteRequest { role: role.clone() };
            let r = unary(
                g.clone(),
                |mut c| async move { auth_call!(c, role_delete, req) },
            )?;
            header_only(
                g.format,
                &r.header,
                format!("Role {role} deleted"),
                r.encode_to_vec(),
            )
        }
        "get" => {
            let role = one("get")?;
            let g = g.with_format(f)?;
            let req = AuthRoleGetRequest { role: role.clone() };
            let r = unary(
                g.clone(),
                |mut c| async move { auth_call!(c, role_get, req) },
            )?;
            print_role(g.format, &role, &r)
        }
        "list" => {
            if !args.is_empty() {
                return Err(bad_args("role list command requires no arguments"));
            }
            let g = g.with_format(f)?;
            let r = unary(g.clone(), |mut c| async move {
                auth_call!(c, role_list, AuthRoleListRequest {})
            })?;
            let bytes = match g.format {
                Format::Simple => r
                    .roles
                    .iter()
                    .map(|u| format!("{u}\n"))
                    .collect::<String>()
                    .into_bytes(),
                Format::Json => (obj(&[
                    ("header", opt_header(&r.header)),
                    ("roles", nz_arr(r.roles.iter().map(|u| jstr(u)).collect())),
                ]) + "\n")
                    .into_bytes(),
                Format::Fields => {
                    let mut t = header_fields_text(&r.header) + "\"Roles\" :";
                    for role in &r.roles {
                        t += &format!(" {}", go_quote(role));
                    }
                    (t + "\n").into_bytes()
                }
                Format::Protobuf => r.encode_to_vec(),
                Format::Table => return Err(g.format.unsupported()),
            };
            out(&bytes)
        }
        "grant-permission" => {
            if args.len() < 3 {
                return Err(bad_args("role grant command requires role name, permission type, and key [endkey] as its argument"));
            }
            let perm_type = match args[1].to_uppercase().as_str() {
                "READ" => PermType::Read,
                "WRITE" => PermType::Write,
                "READWRITE" => PermType::Readwrite,
                _ => return Err(bad_args(format!("invalid permission type: {}", args[1]))),
            };
            let (key, range_end) = perm_range(f, &args[2..])?;
            let g = g.with_format(f)?;
            let role = args[0].clone();
            let req = AuthRoleGrantPermissionRequest {
                name: role.clone(),
                perm: Some(Permission {
                    perm_type: perm_type as i32,
                    key,
                    range_end,
                }),
            };
            let r = unary(g.clone(), |mut c| async move {
                auth_call!(c, role_grant_permission, req)
            })?;
            header_only(
                g.format,
                &r.header,
                format!("Role {role} updated"),
                r.encode_to_vec(),
            )
        }
        _ => {
            if args.len() < 2 {
                return Err(bad_args("role revoke-permission command requires role name and key [endkey] as its argument"));
            }
            let (key, range_end) = perm_range(f, &args[1..])?;
            let g = g.with_format(f)?;
            let role = args[0].clone();
            // The key as given (not `\0` for an empty one).
            let shown = args[1].clone();
            let line = if range_end.is_empty() {
                format!("Permission of key {shown} is revoked from role {role}")
            } else if range_end != b"\0" {
                format!(
                    "Permission of range [{shown}, {}) is revoked from role {role}",
                    String::from_utf8_lossy(&range_end)
                )
            } else {
                format!("Permission of range [{shown}, <open ended> is revoked from role {role}")
            };
            let req = AuthRoleRevokePermissionRequest {
                role,
                key,
                range_end,
            };
            let r = unary(g.clone(), |mut c| async move {
                auth_call!(c, role_revoke_permission, req)
            })?;
            header_only(g.format, &r.header, line, r.encode_to_vec())
        }
    }
}

// ---- usage ----

const fn help(
    path: &'static str,
    short: &'static str,
    usage: &'static str,
    flags: &'static [(&'static str, &'static str)],
) -> Help {
    Help {
        path,
        short,
        usage,
        long: &[],
        flags,
    }
}

pub const HELPS: &[Help] = &[
    help("auth enable", "Enables authentication", "auth enable [flags]", &[("  -h, --help[=false]", "help for enable")]),
    help("auth disable", "Disables authentication", "auth disable [flags]", &[("  -h, --help[=false]", "help for disable")]),
    help(
        "user add",
        "Adds a new user",
        "user add <user name or user:password> [options] [flags]",
        &[
            ("  -h, --help[=false]", "help for add"),
            ("      --interactive[=true]", "Read password from stdin instead of interactive terminal"),
            ("      --new-user-password=\"\"", "Supply password from the command line flag"),
            ("      --no-password[=false]", "Create a user without password (CN based auth only)"),
        ],
    ),
    help("user delete", "Deletes a user", "user delete <user name> [flags]", &[("  -h, --help[=false]", "help for delete")]),
    help(
        "user get",
        "Gets detailed information of a user",
        "user get <user name> [options] [flags]",
        &[
            ("      --detail[=false]", "Show permissions of roles granted to the user"),
            ("  -h, --help[=false]", "help for get"),
        ],
    ),
    help("user list", "Lists all users", "user list [flags]", &[("  -h, --help[=false]", "help for list")]),
    help(
        "user passwd",
        "Changes password of user",
        "user passwd <user name> [options] [flags]",
        &[
            ("  -h, --help[=false]", "help for passwd"),
            ("      --interactive[=true]", "If true, read password from stdin instead of interactive terminal"),
        ],
    ),
    help("user grant-role", "Grants a role to a user", "user grant-role <user name> <role name> [flags]", &[("  -h, --help[=false]", "help for grant-role")]),
    help("user revoke-role", "Revokes a role from a user", "user revoke-role <user name> <role name> [flags]", &[("  -h, --help[=false]", "help for revoke-role")]),
    help("role add", "Adds a new role", "role add <role name> [flags]", &[("  -h, --help[=false]", "help for add")]),
    help("role delete", "Deletes a role", "role delete <role name> [flags]", &[("  -h, --help[=false]", "help for delete")]),
    help("role get", "Gets detailed information of a role", "role get <role name> [flags]", &[("  -h, --help[=false]", "help for get")]),
    help("role list", "Lists all roles", "role list [flags]", &[("  -h, --help[=false]", "help for list")]),
    help(
        "role grant-permission",
        "Grants a key to a role",
        "role grant-permission [options] <role name> <permission type> <key> [endkey] [flags]",
        &[
            ("      --from-key[=false]", "grant a permission of keys that are greater than or equal to the given key using byte compare"),
            ("  -h, --help[=false]", "help for grant-permission"),
            ("      --prefix[=false]", "grant a prefix permission"),
        ],
    ),
    help(
        "role revoke-permission",
        "Revokes a key from a role",
        "role revoke-permission <role name> <key> [endkey] [flags]",
        &[
            ("      --from-key[=false]", "revoke a permission of keys that are greater than or equal to the given key using byte compare"),
            ("  -h, --help[=false]", "help for revoke-permission"),
            ("      --prefix[=false]", "revoke a prefix permission"),
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn word(input: &[u8]) -> (String, Vec<u8>) {
        let mut r = input;
        let w = scan_word(&mut r);
        (w, r.to_vec())
    }

    #[test]
    fn one_word_is_read_as_go_scanf_reads_it() {
        assert_eq!(word(b"pw\nrest"), ("pw".into(), b"rest".to_vec()));
        assert_eq!(word(b"  pw x"), ("pw".into(), b"x".to_vec()));
        assert_eq!(word(b"pw\tx"), ("pw".into(), b"x".to_vec()));
        assert_eq!(word(b"\npw\n"), (String::new(), b"pw\n".to_vec()));
        assert_eq!(word(b""), (String::new(), Vec::new()));
        assert_eq!(word(b"pw"), ("pw".into(), Vec::new()));
    }

    #[test]
    fn every_auth_command_has_its_usage() {
        for (words, _) in super::super::COMMANDS {
            if ["auth", "user", "role"].contains(&words[0]) {
                assert!(HELPS.iter().any(|h| h.path == words.join(" ")), "{words:?}");
            }
        }
    }
}
