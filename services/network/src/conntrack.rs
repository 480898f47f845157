//! Connection-tracking clean-up over ctnetlink: when a container's address
//! or a published port goes, the kernel's conntrack entries that name the
//! address go too. Otherwise a UDP flow keeps using an old DNAT, and an
//! address handed out again inherits the old flows.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, Tuple};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

fn send(socket: &Socket, flags: u16, seq: u32, msg: ConntrackMessage) -> std::io::Result<()> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = flags;
    hdr.sequence_number = seq;
    let mut packet = NetlinkMessage::new(
        hdr,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            msg,
        )),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf, 0)?;
    Ok(())
}

/// Reads messages until `done` says the exchange ended; each message is
/// given to `each`.
fn receive(
    socket: &Socket,
    mut each: impl FnMut(&NetlinkMessage<NetfilterMessage>),
    dump: bool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        let mut off = 0;
        while off < n {
            let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[off..n])
                .map_err(|e| std::io::Error::other(format!("ctnetlink: {e}")))?;
            let len = msg.header.length as usize;
            match &msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    // An ACK (code 0) ends a single request; an error too.
                    if e.code.is_none() || !dump {
                        return match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        };
                    }
                    return Err(e.to_io());
                }
                _ => each(&msg),
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}

fn mentions(orig: &[Tuple], ip: IpAddr) -> bool {
    orig.iter().any(|t| match t {
        Tuple::Ip(v) => v.iter().any(
            |a| matches!(a, IPTuple::SourceAddress(x) | IPTuple::DestinationAddress(x) if *x == ip),
        ),
        _ => false,
    })
}

/// Deletes every IPv4 conntrack entry whose original or reply direction
/// names `ip`. Returns how many went.
pub fn forget(ip: Ipv4Addr) -> std::io::Result<usize> {
    let ip = IpAddr::V4(ip);
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    send(
        &socket,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        ConntrackMessage::Get(vec![]),
    )?;
    let mut victims: Vec<Vec<Tuple>> = Vec::new();
    receive(
        &socket,
        |m| {
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                ..
            }) = &m.payload
            {
                let mut orig = None;
                let mut hit = false;
                for a in attrs {
                    match a {
                        ConntrackAttribute::CtaTupleOrig(t) => {
                            hit |= mentions(t, ip);
                            orig = Some(t.clone());
                        }
                        ConntrackAttribute::CtaTupleReply(t) => hit |= mentions(t, ip),
                        _ => {}
                    }
                }
                if let (true, Some(o)) = (hit, orig) {
                    victims.push(o);
                }
            }
        },
        true,
    )?;
    let mut gone = 0;
    for (i, orig) in victims.into_iter().enumerate() {
        send(
            &socket,
            NLM_F_REQUEST | NLM_F_ACK,
            2 + i as u32,
            ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(orig)]),
        )?;
        match receive(&socket, |_| {}, false) {
            Ok(()) => gone += 1,
            // Expired meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(gone)
}
