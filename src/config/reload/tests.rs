use super::*;
use crate::config::parse;

/// Two networks on one socket, as the reload tests run them.
const BASE: &str = r#"
    [[network]]
    dev = "vxt42"
    vni = 42
    local = "198.18.0.1"
    remotes = ["198.18.0.2"]
    address = "198.19.42.1/24"
    queues = 2

    [[network]]
    dev = "vxt43"
    vni = 43
    local = "198.18.0.1"
    remotes = ["198.18.0.2"]
    statics = ["02:00:00:00:00:66=198.18.0.2"]
    allow_from = ["198.18.0.12"]
    address = "198.19.43.1/24"
    queues = 2
"#;

fn configs(text: &str) -> Vec<NetworkConfig> {
    parse(text).unwrap_or_else(|e| panic!("{e}\n{text}")).networks
}

/// Plans `from` -> `to`, with the sockets built as `from` needs them.
fn plan_texts(from: &str, to: &str) -> Plan {
    let (old, new) = (configs(from), configs(to));
    plan(&old, &SocketShape::of_all(&old), &new)
}

fn action<'a>(p: &'a Plan, dev: &str) -> &'a Action {
    &p.network(dev).unwrap_or_else(|| panic!("{dev} not in {p:#?}")).action
}

fn bind(port: u16) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 1], port))
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn the_same_file_changes_nothing() {
    let p = plan_texts(BASE, BASE);
    assert!(p.is_noop(), "{p:#?}");
    assert_eq!(p.sockets, BTreeMap::from([(bind(4789), SocketAction::Keep)]));
    // Spelling a default out, or leaving it out, is no change either.
    let spelled = BASE.replace("queues = 2", "queues = 2\nport = 4789\nlearning = true\nageing = 300");
    assert!(plan_texts(BASE, &spelled).is_noop());
}

#[test]
fn added_and_removed_networks_share_the_kept_socket() {
    let with_44 = format!(
        "{BASE}\n[[network]]\ndev = \"vxt44\"\nvni = 44\nlocal = \"198.18.0.1\"\nremotes = [\"198.18.0.2\"]\nqueues = 2\n"
    );
    let p = plan_texts(BASE, &with_44);
    assert_eq!(*action(&p, "vxt44"), Action::Add);
    assert_eq!((action(&p, "vxt42"), action(&p, "vxt43")), (&Action::Unchanged, &Action::Unchanged));
    assert_eq!(p.sockets[&bind(4789)], SocketAction::Keep);

    let only_42 = BASE.split("[[network]]").take(2).collect::<Vec<_>>().join("[[network]]");
    let p = plan_texts(BASE, &only_42);
    assert_eq!(*action(&p, "vxt43"), Action::Remove);
    assert_eq!(p.network("vxt43").unwrap().vni, 43);
    assert_eq!(*action(&p, "vxt42"), Action::Unchanged);
    assert_eq!(p.sockets[&bind(4789)], SocketAction::Keep);
    assert_eq!(p.networks.last().unwrap().dev, "vxt43", "removed networks come last");
}

#[test]
fn flood_list_statics_and_allowlist_change_in_place() {
    let to = BASE
        .replace(
            "statics = [\"02:00:00:00:00:66=198.18.0.2\"]",
            "statics = [\"02:00:00:00:00:77=198.18.0.2\", \"02:00:00:00:00:88=198.18.0.3:4790\"]",
        )
        .replace("allow_from = [\"198.18.0.12\"]", "allow_from = []")
        .replace(
            "    remotes = [\"198.18.0.2\"]\n    statics",
            "    remotes = [\"198.18.0.3\"]\n    statics",
        );
    let p = plan_texts(BASE, &to);
    assert_eq!(*action(&p, "vxt42"), Action::Unchanged);
    let Action::Change(changes) = action(&p, "vxt43") else { panic!("{p:#?}") };
    assert_eq!(
        changes,
        &vec![
            Change::Remotes { added: vec![sa("198.18.0.3:4789")], removed: vec![sa("198.18.0.2:4789")] },
            Change::Statics {
                added: vec![
                    ("02:00:00:00:00:77".parse().unwrap(), sa("198.18.0.2:4789")),
                    ("02:00:00:00:00:88".parse().unwrap(), sa("198.18.0.3:4790")),
                ],
                removed: vec![("02:00:00:00:00:66".parse().unwrap(), sa("198.18.0.2:4789"))],
            },
            Change::AllowFrom { old: vec!["198.18.0.12".parse().unwrap()], new: vec![] },
        ]
    );
    assert!(changes.iter().all(Change::touches_socket));
    assert_eq!(
        action(&p, "vxt43").details(),
        vec![
            "remotes +198.18.0.3:4789 -198.18.0.2:4789",
            "statics +02:00:00:00:00:77=198.18.0.2:4789 +02:00:00:00:00:88=198.18.0.3:4790 -02:00:00:00:00:66=198.18.0.2:4789",
            "allow_from [198.18.0.12/32] -> []",
        ]
    );
    // A static entry that moves to another VTEP is removed there and added here.
    let moved = BASE.replace("00:66=198.18.0.2", "00:66=198.18.0.9");
    let Action::Change(c) = action(&plan_texts(BASE, &moved), "vxt43").clone() else { panic!() };
    let mac: MacAddr = "02:00:00:00:00:66".parse().unwrap();
    assert_eq!(
        c,
        vec![Change::Statics {
            added: vec![(mac, sa("198.18.0.9:4789"))],
            removed: vec![(mac, sa("198.18.0.2:4789"))]
        }]
    );
    // The same remote written with its port is the same remote.
    assert!(plan_texts(BASE, &BASE.replace("\"198.18.0.2\"]", "\"198.18.0.2:4789\"]")).is_noop());
}

#[test]
fn fdb_settings_and_packet_policies_change_in_place() {
    let to = BASE.replacen(
        "queues = 2",
        "queues = 2\nlearning = false\nageing = 1\nmax_fdb = 10\ndf = \"set\"\nmss_clamp = 1400\ntos = \"inherit\"\nstrict_reserved = true",
        1,
    );
    let p = plan_texts(BASE, &to);
    let Action::Change(c) = action(&p, "vxt42") else { panic!("{p:#?}") };
    assert_eq!(
        c,
        &vec![
            Change::StrictReserved(true),
            Change::Learning(false),
            Change::Ageing { old: 300, new: 1 },
            Change::MaxFdb { old: 8192, new: 10 },
            Change::Df { old: Df::Inherit, new: Df::Set },
            Change::MssClamp { old: None, new: Some(MssClamp::PathMtu(1400)) },
            Change::Tos { old: Tos::Fixed(0), new: Tos::Inherit },
        ]
    );
    assert_eq!(c.iter().filter(|c| c.touches_socket()).count(), 1, "only strict_reserved");
    assert_eq!(
        action(&p, "vxt42").details(),
        vec![
            "strict_reserved false -> true",
            "learning true -> false",
            "ageing 300 -> 1",
            "max_fdb 8192 -> 10",
            "df inherit -> set",
            "mss_clamp off -> 1400",
            "tos 0 -> inherit",
        ]
    );
    assert_eq!(*action(&p, "vxt43"), Action::Unchanged);
    assert_eq!(p.sockets[&bind(4789)], SocketAction::Keep, "43 still lets the socket fragment");
}

#[test]
fn tap_settings_restart_that_network_only() {
    let p = plan_texts(BASE, &BASE.replace("198.19.43.1/24\"", "198.19.43.1/24\"\nmtu = 1400"));
    assert_eq!(*action(&p, "vxt43"), Action::Restart(vec!["mtu 1450 -> 1400".into()]));
    assert_eq!(*action(&p, "vxt42"), Action::Unchanged);
    assert_eq!(p.sockets[&bind(4789)], SocketAction::Keep);

    let many = BASE.replace("vni = 43", "vni = 45").replace(
        "198.19.43.1/24\"",
        "198.19.43.1/24\"\nmac = \"02:00:00:00:43:01\"\ncontrol = \"/tmp/x.sock\"",
    );
    let Action::Restart(why) = action(&plan_texts(BASE, &many), "vxt43").clone() else { panic!() };
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(why[0] == "vni 43 -> 45" && why[1].starts_with("mac none -> 02:00:00:00:43:01"), "{why:?}");
    assert!(why[2].starts_with("control /run/vxtap/") && why[2].ends_with("-> /tmp/x.sock"), "{why:?}");
}

#[test]
fn a_network_that_moves_to_another_port_restarts_on_a_new_socket() {
    let to = BASE.replace("vni = 43", "vni = 43\nport = 4790");
    let p = plan_texts(BASE, &to);
    assert_eq!(
        *action(&p, "vxt43"),
        Action::Restart(vec!["socket 198.18.0.1:4789 -> 198.18.0.1:4790".into()])
    );
    assert_eq!(*action(&p, "vxt42"), Action::Unchanged);
    assert_eq!(
        p.sockets,
        BTreeMap::from([(bind(4789), SocketAction::Keep), (bind(4790), SocketAction::Open)])
    );
    // And back: the socket it leaves is closed.
    let back = plan_texts(&to, BASE);
    assert_eq!(back.sockets[&bind(4790)], SocketAction::Close);
    assert_eq!(back.sockets[&bind(4789)], SocketAction::Keep);
}

#[test]
fn a_socket_that_must_change_is_rebuilt_with_its_networks() {
    // Every network on the socket changes its TTL (they must agree): the socket is rebuilt.
    let to = BASE.replace("queues = 2", "queues = 2\nttl = \"8\"");
    let p = plan_texts(BASE, &to);
    assert_eq!(p.sockets[&bind(4789)], SocketAction::Rebuild(vec!["ttl auto -> 8".into()]));
    for dev in ["vxt42", "vxt43"] {
        assert_eq!(*action(&p, dev), Action::Restart(vec!["ttl auto -> 8".into()]), "{dev}");
    }
    // 42 alone: all its networks set df, then one lets it fragment again: the socket needs
    // fragmenting send sockets, and the network that did not change restarts with it.
    let set = BASE.replace("queues = 2", "queues = 2\ndf = \"set\"");
    let one_inherits = set.replacen("df = \"set\"", "df = \"inherit\"", 1);
    let p = plan_texts(&set, &one_inherits);
    let SocketAction::Rebuild(why) = &p.sockets[&bind(4789)] else { panic!("{p:#?}") };
    assert_eq!(why, &vec!["df: the socket needs fragmenting send sockets".to_string()]);
    assert!(matches!(action(&p, "vxt42"), Action::Restart(_)));
    let Action::Restart(why) = action(&p, "vxt43") else { panic!() };
    assert!(why[0].starts_with("its socket 198.18.0.1:4789 is rebuilt (df"), "{why:?}");
    // The other way round the fragmenting sockets stay: nothing restarts.
    let p = plan_texts(&one_inherits, &set);
    assert_eq!(p.sockets[&bind(4789)], SocketAction::Keep);
    assert!(matches!(action(&p, "vxt42"), Action::Change(_)));
    assert_eq!(*action(&p, "vxt43"), Action::Unchanged);
}

#[test]
fn a_socket_is_judged_by_how_it_was_built() {
    // Built with fragmenting sockets (a network had df = inherit at start), though no running
    // network needs them any more: a network that needs them again does not rebuild it.
    let set = BASE.replace("queues = 2", "queues = 2\ndf = \"set\"");
    let (old, new) = (configs(&set), configs(&set.replacen("df = \"set\"", "df = \"unset\"", 1)));
    let built = SocketShape::of_all(&configs(BASE));
    let p = plan(&old, &built, &new);
    assert_eq!(p.sockets[&bind(4789)], SocketAction::Keep);
    assert!(matches!(action(&p, "vxt42"), Action::Change(_)));
}

#[test]
fn shapes_follow_the_members() {
    let nets = configs(&BASE.replace("queues = 2", "queues = 2\ndf = \"set\""));
    let shape = SocketShape::of(&nets).unwrap();
    assert_eq!(
        (shape.proto, shape.queues, shape.fragmenting, shape.multicast()),
        (Proto::Vxlan, 2, false, false)
    );
    assert_eq!(SocketShape::of(&nets[..0]), None);
    assert_eq!(SocketShape::of_all(&nets).len(), 1);
    let mut other = shape.clone();
    other.fragmenting = true;
    assert!(other.serves(&shape).is_ok() && shape.serves(&other).is_err());
    other.groups = vec!["239.1.1.1".parse().unwrap()];
    assert_eq!(other.serves(&shape), Err(vec!["groups [239.1.1.1] -> []".into()]));
}

#[test]
fn turning_proxy_on_or_off_restarts_that_network_and_says_so() {
    let on = BASE.replace("198.19.43.1/24\"", "198.19.43.1/24\"\nproxy = true");
    assert_eq!(*action(&plan_texts(BASE, &on), "vxt43"), Action::Restart(vec!["proxy false -> true".into()]));
    assert_eq!(*action(&plan_texts(&on, BASE), "vxt43"), Action::Restart(vec!["proxy true -> false".into()]));
    assert_eq!(*action(&plan_texts(BASE, &on), "vxt42"), Action::Unchanged);
}
