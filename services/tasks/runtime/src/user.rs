//! Resolving Docker's `USER[:GROUP]` against a container's /etc/passwd and
//! /etc/group. The gateway uses it for a container's user (reading the
//! files from the image's layers), the exec shim for an exec's user
//! (reading them inside the running container).

/// A resolved process identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Groups that list the user as a member, without the primary group.
    pub additional_gids: Vec<u32>,
    /// The user's home directory: from passwd, else /root for root and /.
    pub home: String,
}

fn records(text: &str, fields: usize) -> Vec<Vec<&str>> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= fields)
        .collect()
}

/// Resolves `user` ("", "name", "uid", "name:group", "uid:gid") like
/// Docker: a name must have a passwd entry; a number needs none (its group
/// and home then come from the entry if there is one); an empty user is
/// root. `passwd` and `group` are the files' contents (empty if missing).
/// The error is Docker's message.
pub fn resolve(user: &str, passwd: &str, group: &str) -> Result<Identity, String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entries = records(passwd, 7);
    let (uid, entry) = match u.parse::<u32>() {
        Ok(n) => (
            n,
            entries.iter().find(|f| f[2].parse::<u32>().ok() == Some(n)),
        ),
        Err(_) => {
            let f = entries.iter().find(|f| f[0] == u).ok_or_else(|| {
                format!("unable to find user {u}: no matching entries in passwd file")
            })?;
            let uid = f[2]
                .parse()
                .map_err(|_| format!("bad uid for user {u} in /etc/passwd"))?;
            (uid, Some(f))
        }
    };
    let mut gid = entry.and_then(|f| f[3].parse().ok()).unwrap_or(0);
    let groups = records(group, 4);
    if let Some(g) = g.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        };
    }
    let mut additional_gids = Vec::new();
    if let Some(name) = entry.map(|f| f[0]) {
        for f in &groups {
            if f[3].split(',').any(|m| m == name) {
                if let Ok(id) = f[2].parse::<u32>() {
                    if id != gid && !additional_gids.contains(&id) {
                        additional_gids.push(id);
                    }
                }
            }
        }
    }
    let home = match entry {
        Some(f) => f[5].to_string(),
        None if uid == 0 => "/root".into(),
        None => "/".into(),
    };
    Ok(Identity {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\napp:x:1000:1000::/app:/bin/sh\nbroken\n";
    const GROUP: &str =
        "root:x:0:\nnogroup:x:65534:\nstaff:x:50:app\napp:x:1000:\nwheel:x:10:root,app\n";

    #[test]
    fn names_and_numbers() {
        let root = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(root.additional_gids, vec![10]);
        let app = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!((app.uid, app.gid, app.home.as_str()), (1000, 1000, "/app"));
        assert_eq!(app.additional_gids, vec![50, 10]);
        // A number finds its entry for the group and home.
        let n = resolve("65534", PASSWD, GROUP).unwrap();
        assert_eq!((n.uid, n.gid, n.home.as_str()), (65534, 65534, "/home"));
        // A number without an entry is used as is.
        let n = resolve("1234:5678", PASSWD, GROUP).unwrap();
        assert_eq!((n.uid, n.gid, n.home.as_str()), (1234, 5678, "/"));
        assert!(n.additional_gids.is_empty());
        // The primary group is not repeated among the additional ones.
        let g = resolve("app:staff", PASSWD, GROUP).unwrap();
        assert_eq!((g.gid, g.additional_gids.clone()), (50, vec![10]));
        assert_eq!(resolve("nobody:10", PASSWD, GROUP).unwrap().gid, 10);
    }

    #[test]
    fn docker_errors() {
        assert_eq!(
            resolve("ghost", PASSWD, GROUP).unwrap_err(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert_eq!(
            resolve("app:ghost", PASSWD, GROUP).unwrap_err(),
            "unable to find group ghost: no matching entries in group file"
        );
        // No passwd at all: only numbers work.
        assert!(resolve("root", "", "").is_err());
        assert_eq!(resolve("0:0", "", "").unwrap().home, "/root");
    }
}
