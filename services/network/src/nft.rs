//! berth-network's one nftables table (`inet <name>`), rebuilt whole from
//! the store after every change in one atomic `nft -j` transaction
//! (`add table; delete table; add table …`), so there is never a moment
//! without rules and never a stale one.
//!
//! ```text
//! chain pre     nat prerouting -100: ip daddr 127.0.0.0/8 return
//!                                    fib daddr type local jump publish
//! chain out     nat output -100:     fib daddr type local jump publish
//! chain publish [ip daddr H] meta l4proto P th dport N dnat ip to C:M   (one per port)
//! chain post    nat postrouting 100: ip saddr NET oifname != BR masquerade       (not internal)
//!                                    oifname BR ct status dnat ip saddr NET masquerade (hairpin)
//!                                    oifname BR ip saddr 127.0.0.0/8 masquerade  (127.0.0.1:port)
//! chain guard   filter prerouting -300: iifname {BRs} ip daddr 127.0.0.0/8 drop
//! chain fwd     filter forward 0:    iifname I oifname != I drop; oifname I iifname != I drop (internal)
//!                                    oifname BR ct state established,related accept
//!                                    ct status dnat accept                       (published ports)
//!                                    oifname BR iifname != BR drop               (no direct routing in)
//!                                    iifname BR oifname {other BRs} drop         (isolation)
//! ```
//! Base chains keep policy accept and match only this instance's bridges:
//! every table's base chains see every packet, and any drop wins.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix, SetItem, CT,
};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{JumpTarget, Match, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// A bridge network as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeNet {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub internal: bool,
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    /// "tcp" or "udp".
    pub proto: String,
    /// Only this host address; None: every local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub ip: Ipv4Addr,
    pub port: u16,
}

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}

fn field(proto: &'static str, f: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(proto),
            field: Cow::Borrowed(f),
        },
    )))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn prefix(net: Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(net.network().to_string())),
        len: net.prefix_len() as u32,
    }))
}

fn set_of(items: &[&str]) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items.iter().map(|i| SetItem::Element(s(*i))).collect(),
    ))
}

fn m(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn ct_status_dnat() -> Statement<'static> {
    m(
        Expression::Named(NamedExpression::CT(CT {
            key: Cow::Borrowed("status"),
            family: None,
            dir: None,
        })),
        Operator::IN,
        s("dnat"),
    )
}

fn fib_local() -> Statement<'static> {
    m(
        Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Type,
            flags: HashSet::from([FibFlag::Daddr]),
        })),
        Operator::EQ,
        s("local"),
    )
}

fn loopback() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("valid prefix")
}

struct Builder {
    table: String,
    objects: Vec<NfObject<'static>>,
    rules: usize,
}

impl Builder {
    fn chain(&mut self, name: &str, base: Option<(NfChainType, NfHook, i32)>) {
        let mut c = Chain {
            family: NfFamily::INet,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Owned(name.to_string()),
            ..Default::default()
        };
        if let Some((t, hook, prio)) = base {
            c._type = Some(t);
            c.hook = Some(hook);
            c.prio = Some(prio);
            c.policy = Some(NfChainPolicy::Accept);
        }
        self.objects
            .push(NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(c))));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Statement<'static>>) {
        self.rules += 1;
        self.objects
            .push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
                family: NfFamily::INet,
                table: Cow::Owned(self.table.clone()),
                chain: Cow::Owned(chain.to_string()),
                expr: Cow::Owned(expr),
                ..Default::default()
            }))));
    }
}

fn table(name: &str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: Cow::Owned(name.to_string()),
        handle: None,
    })
}

/// The whole table for `nets` and `dnats`, replacing any old one in the
/// same transaction. Returns the batch and its number of rules.
pub fn ruleset(name: &str, nets: &[BridgeNet], dnats: &[Dnat]) -> (Nftables<'static>, usize) {
    let mut b = Builder {
        table: name.to_string(),
        objects: vec![
            // "add" makes it exist so that "delete" cannot fail; the
            // second "add" starts it afresh.
            NfObject::CmdObject(NfCmd::Add(table(name))),
            NfObject::CmdObject(NfCmd::Delete(table(name))),
            NfObject::CmdObject(NfCmd::Add(table(name))),
        ],
        rules: 0,
    };
    b.chain("pre", Some((NfChainType::NAT, NfHook::Prerouting, -100)));
    b.chain("out", Some((NfChainType::NAT, NfHook::Output, -100)));
    b.chain("publish", None);
    b.chain("post", Some((NfChainType::NAT, NfHook::Postrouting, 100)));
    b.chain(
        "guard",
        Some((NfChainType::Filter, NfHook::Prerouting, -300)),
    );
    b.chain("fwd", Some((NfChainType::Filter, NfHook::Forward, 0)));

    // Published ports. A packet to 127.0.0.0/8 arriving from outside the
    // host never reaches them (moby#41872); the host's own 127.0.0.1 goes
    // through `out`.
    b.rule(
        "pre",
        vec![
            m(field("ip", "daddr"), Operator::EQ, prefix(loopback())),
            Statement::Return(None),
        ],
    );
    for chain in ["pre", "out"] {
        b.rule(
            chain,
            vec![
                fib_local(),
                Statement::Jump(JumpTarget {
                    target: Cow::Borrowed("publish"),
                }),
            ],
        );
    }
    for d in dnats {
        let mut e = Vec::new();
        if let Some(h) = d.host_ip {
            e.push(m(field("ip", "daddr"), Operator::EQ, s(h.to_string())));
        }
        e.push(m(meta(MetaKey::L4proto), Operator::EQ, s(d.proto.clone())));
        e.push(m(
            field("th", "dport"),
            Operator::EQ,
            Expression::Number(d.host_port as u32),
        ));
        e.push(Statement::DNAT(Some(NAT {
            addr: Some(s(d.ip.to_string())),
            family: Some(nftables::stmt::NATFamily::IP),
            port: Some(Expression::Number(d.port as u32)),
            flags: None,
        })));
        b.rule("publish", e);
    }

    let bridges: Vec<&str> = nets.iter().map(|n| n.bridge.as_str()).collect();
    for n in nets {
        if !n.internal {
            b.rule(
                "post",
                vec![
                    m(field("ip", "saddr"), Operator::EQ, prefix(n.subnet)),
                    m(meta(MetaKey::Oifname), Operator::NEQ, s(n.bridge.clone())),
                    Statement::Masquerade(None),
                ],
            );
        }
        // Hairpin: a container reaching a published port of its own
        // network gets the answer back through the host.
        b.rule(
            "post",
            vec![
                m(meta(MetaKey::Oifname), Operator::EQ, s(n.bridge.clone())),
                ct_status_dnat(),
                m(field("ip", "saddr"), Operator::EQ, prefix(n.subnet)),
                Statement::Masquerade(None),
            ],
        );
        if !n.internal {
            b.rule(
                "post",
                vec![
                    m(meta(MetaKey::Oifname), Operator::EQ, s(n.bridge.clone())),
                    m(field("ip", "saddr"), Operator::EQ, prefix(loopback())),
                    Statement::Masquerade(None),
                ],
            );
        }
    }
    if !bridges.is_empty() {
        // route_localnet on the bridges lets 127.0.0.1 be DNATed to a
        // container; nothing may use it to reach the host's loopback.
        b.rule(
            "guard",
            vec![
                m(meta(MetaKey::Iifname), Operator::EQ, set_of(&bridges)),
                m(field("ip", "daddr"), Operator::EQ, prefix(loopback())),
                Statement::Drop(None),
            ],
        );
    }
    for n in nets.iter().filter(|n| n.internal) {
        b.rule(
            "fwd",
            vec![
                m(meta(MetaKey::Iifname), Operator::EQ, s(n.bridge.clone())),
                m(meta(MetaKey::Oifname), Operator::NEQ, s(n.bridge.clone())),
                Statement::Drop(None),
            ],
        );
        b.rule(
            "fwd",
            vec![
                m(meta(MetaKey::Oifname), Operator::EQ, s(n.bridge.clone())),
                m(meta(MetaKey::Iifname), Operator::NEQ, s(n.bridge.clone())),
                Statement::Drop(None),
            ],
        );
    }
    // Replies to what containers started, and published ports (DNAT),
    // come in; nothing else reaches a container from outside its bridge
    // (no direct routing to container addresses, as docker 28).
    for n in nets.iter().filter(|n| !n.internal) {
        b.rule(
            "fwd",
            vec![
                m(meta(MetaKey::Oifname), Operator::EQ, s(n.bridge.clone())),
                m(
                    Expression::Named(NamedExpression::CT(CT {
                        key: Cow::Borrowed("state"),
                        family: None,
                        dir: None,
                    })),
                    Operator::IN,
                    Expression::List(vec![s("established"), s("related")]),
                ),
                Statement::Accept(None),
            ],
        );
    }
    b.rule("fwd", vec![ct_status_dnat(), Statement::Accept(None)]);
    for n in nets.iter().filter(|n| !n.internal) {
        b.rule(
            "fwd",
            vec![
                m(meta(MetaKey::Oifname), Operator::EQ, s(n.bridge.clone())),
                m(meta(MetaKey::Iifname), Operator::NEQ, s(n.bridge.clone())),
                Statement::Drop(None),
            ],
        );
    }
    for n in nets {
        let others: Vec<&str> = bridges.iter().copied().filter(|o| *o != n.bridge).collect();
        if others.is_empty() {
            continue;
        }
        b.rule(
            "fwd",
            vec![
                m(meta(MetaKey::Iifname), Operator::EQ, s(n.bridge.clone())),
                m(meta(MetaKey::Oifname), Operator::EQ, set_of(&others)),
                Statement::Drop(None),
            ],
        );
    }
    let rules = b.rules;
    (
        Nftables {
            objects: Cow::Owned(b.objects),
        },
        rules,
    )
}

/// Replaces table `name` with the rules for `nets` and `dnats`, atomically.
/// Returns the number of rules.
pub fn apply(name: &str, nets: &[BridgeNet], dnats: &[Dnat]) -> Result<usize, String> {
    let (batch, rules) = ruleset(name, nets, dnats);
    nftables::helper::apply_ruleset(&batch)
        .map_err(|e| format!("apply nftables table inet {name}: {e}"))?;
    Ok(rules)
}

/// Deletes table `name` (if it exists).
pub fn remove(name: &str) -> Result<(), String> {
    let batch = Nftables {
        objects: Cow::Owned(vec![
            NfObject::CmdObject(NfCmd::Add(table(name))),
            NfObject::CmdObject(NfCmd::Delete(table(name))),
        ]),
    };
    nftables::helper::apply_ruleset(&batch)
        .map_err(|e| format!("delete nftables table inet {name}: {e}"))
}

/// The number of rules table `name` holds now; None when it is missing.
pub fn rule_count(name: &str) -> Option<usize> {
    let set = nftables::helper::get_current_ruleset_with_args(
        nftables::helper::DEFAULT_NFT,
        ["list", "table", "inet", name],
    )
    .ok()?;
    Some(
        set.objects
            .iter()
            .filter(|o| matches!(o, NfObject::ListObject(NfListObject::Rule(_))))
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> Vec<BridgeNet> {
        vec![
            BridgeNet {
                bridge: "bt-a".into(),
                subnet: "10.1.0.0/24".parse().unwrap(),
                internal: false,
            },
            BridgeNet {
                bridge: "bt-b".into(),
                subnet: "10.2.0.0/24".parse().unwrap(),
                internal: true,
            },
        ]
    }

    #[test]
    fn the_batch_replaces_the_table_and_counts_its_rules() {
        let dnats = vec![Dnat {
            proto: "tcp".into(),
            host_ip: None,
            host_port: 8080,
            ip: "10.1.0.2".parse().unwrap(),
            port: 80,
        }];
        let (batch, rules) = ruleset("t", &nets(), &dnats);
        let json = serde_json::to_value(&batch).unwrap();
        let objs = json["nftables"].as_array().unwrap();
        assert!(objs[0]["add"]["table"].is_object());
        assert!(objs[1]["delete"]["table"].is_object());
        let n = objs.iter().filter(|o| o["add"]["rule"].is_object()).count();
        assert_eq!(n, rules);
        let text = json.to_string();
        assert!(text.contains("\"dnat\""), "{text}");
        // Outbound and 127.0.0.1 masquerades for the normal network only,
        // the hairpin one for both.
        assert_eq!(text.matches("\"masquerade\"").count(), 4, "{text}");
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn nft_accepts_the_table_and_lists_its_rules() {
        if !is_root()
            || std::process::Command::new("nft")
                .arg("-v")
                .output()
                .is_err()
        {
            eprintln!("skipped: needs root and nft");
            return;
        }
        let name = format!("berth-ut-{}", std::process::id());
        let dnats = vec![
            Dnat {
                proto: "tcp".into(),
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_port: 18080,
                ip: "10.1.0.2".parse().unwrap(),
                port: 80,
            },
            Dnat {
                proto: "udp".into(),
                host_ip: None,
                host_port: 18081,
                ip: "10.1.0.3".parse().unwrap(),
                port: 53,
            },
        ];
        let rules = apply(&name, &nets(), &dnats).unwrap();
        assert_eq!(rule_count(&name), Some(rules));
        // Applying again replaces rather than appends.
        let rules2 = apply(&name, &nets()[..1], &[]).unwrap();
        assert_eq!(rule_count(&name), Some(rules2));
        assert!(rules2 < rules);
        remove(&name).unwrap();
        assert_eq!(rule_count(&name), None);
        remove(&name).unwrap();
    }
}
