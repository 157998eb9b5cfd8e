//! `[server] user` and `group`: who the process runs as once its sockets
//! and files are open (nginx's `user` directive). The names are looked up
//! here, in the system's user database, so that a config naming an
//! unknown user or group is refused by `tidegate check` with its line;
//! the switch itself is the server's (`server/privilege.rs`).

use nix::unistd::{Group, User};

use super::source::Problems;

/// A user (and group) to run as, resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunAs {
    /// The user's name: its supplementary groups are looked up by it.
    pub user: String,
    pub uid: u32,
    /// `group`'s, or the user's primary group.
    pub gid: u32,
}

/// Resolves `user` and `group`; an unknown one is a problem of its field.
pub(super) fn run_as(user: Option<&str>, group: Option<&str>, p: &mut Problems) -> Option<RunAs> {
    let Some(name) = user else {
        if group.is_some() {
            p.add("server.group", "needs server.user (whose group it is)");
        }
        return None;
    };
    let user = match User::from_name(name) {
        Ok(Some(u)) => Some(u),
        Ok(None) => {
            p.add("server.user", "no such user");
            None
        }
        Err(e) => {
            p.add("server.user", format!("cannot look `{name}` up: {e}"));
            None
        }
    };
    let gid = match group.map(Group::from_name) {
        None => user.as_ref().map(|u| u.gid),
        Some(Ok(Some(g))) => Some(g.gid),
        Some(Ok(None)) => {
            p.add("server.group", "no such group");
            None
        }
        Some(Err(e)) => {
            p.add("server.group", format!("cannot look it up: {e}"));
            None
        }
    };
    let (user, gid) = (user?, gid?);
    Some(RunAs {
        user: name.to_string(),
        uid: user.uid.as_raw(),
        gid: gid.as_raw(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn config(server: &str) -> Result<Config, String> {
        let text = format!(
            "[server]\n{server}\n[[listeners]]\naddress = \"127.0.0.1:1\"\n\
             [upstreams.app]\nservers = [\"127.0.0.1:2\"]\n[[routes]]\nupstream = \"app\"\n"
        );
        Config::from_toml(&text, "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn root_resolves_with_its_primary_group() {
        let c = config("user = \"root\"").expect("root exists");
        let r = c.run_as.expect("run_as");
        assert_eq!((r.user.as_str(), r.uid, r.gid), ("root", 0, 0));
        let c = config("user = \"root\"\ngroup = \"root\"").expect("root exists");
        assert_eq!(c.run_as.map(|r| r.gid), Some(0));
        assert_eq!(config("").expect("valid").run_as, None);
    }

    #[test]
    fn unknown_names_are_problems_of_their_field() {
        let e = config("user = \"no-such-user-tidegate\"").expect_err("unknown user");
        assert_eq!(e, "t.toml:2: server.user: no such user");
        let e = config("user = \"root\"\ngroup = \"no-such-group-tidegate\"").expect_err("group");
        assert_eq!(e, "t.toml:3: server.group: no such group");
        let e = config("group = \"root\"").expect_err("group alone");
        assert!(
            e.starts_with("t.toml:2: server.group: needs server.user"),
            "{e}"
        );
    }
}
