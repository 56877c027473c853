//! VRRP advertisements over a real link between two namespaces: what one
//! node's socket sends, the other's receives with TTL 255 and decodes; a
//! receiver's checks accept it. Needs root.

use std::{net::Ipv4Addr, time::Duration};

use lb_tests::{netns::Netns, unique_tag};
use lb_user::vrrp::{
    packet::{auth_data, Advertisement, Version, MULTICAST_GROUP},
    socket::{Peers, VrrpSocket},
    validate::{validate, Expectation},
};

const A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 6);

fn pair() -> (Netns, Netns) {
    let a = Netns::new(&unique_tag("xv")).unwrap();
    let b = Netns::new(&unique_tag("xv")).unwrap();
    a.ip(&[
        "link",
        "add",
        "vrrp0",
        "type",
        "veth",
        "peer",
        "name",
        "vrrp0",
        "netns",
        b.name(),
    ])
    .unwrap();
    for (ns, addr) in [(&a, A), (&b, B)] {
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "vrrp0"])
            .unwrap();
        ns.ip(&["link", "set", "vrrp0", "up"]).unwrap();
    }
    (a, b)
}

fn open(ns: &Netns, source: Ipv4Addr, peers: Peers) -> VrrpSocket {
    ns.run(move || VrrpSocket::open("vrrp0", source, peers))
        .unwrap()
        .expect("VRRP socket")
}

fn advert(version: Version) -> Advertisement {
    Advertisement {
        version,
        vrid: 50,
        priority: 255,
        interval_cs: 100,
        addresses: vec![Ipv4Addr::new(198, 51, 100, 100)],
        auth: (version == Version::V2).then(|| auth_data("REDACTED")),
    }
}

#[test]
fn unicast_version_2_advert_arrives_intact_with_ttl_255() {
    let (a, b) = pair();
    let sender = open(&a, A, Peers::Unicast(vec![B]));
    let receiver = open(&b, B, Peers::Unicast(vec![A]));
    sender.send(&advert(Version::V2)).unwrap();
    let received = receiver
        .receive(Duration::from_secs(2))
        .expect("an advertisement");
    assert_eq!((received.source, received.destination, received.ttl), (A, B, 255));
    let decoded = received.advert.expect("decodes");
    assert_eq!(decoded, advert(Version::V2));
    let expect = Expectation {
        version: Version::V2,
        vrid: 50,
        auth: Some(auth_data("REDACTED")),
        interval_cs: 100,
        unicast_peers: vec![A],
        own_addresses: vec![B],
    };
    assert_eq!(validate(&decoded, received.source, received.ttl, &expect), Ok(()));
}

#[test]
fn multicast_version_3_advert_reaches_the_group_and_not_the_sender() {
    let (a, b) = pair();
    let sender = open(&a, A, Peers::Multicast);
    let receiver = open(&b, B, Peers::Multicast);
    sender.send(&advert(Version::V3)).unwrap();
    let received = receiver
        .receive(Duration::from_secs(2))
        .expect("an advertisement");
    assert_eq!(
        (received.source, received.destination, received.ttl),
        (A, MULTICAST_GROUP, 255)
    );
    assert_eq!(received.advert.expect("decodes"), advert(Version::V3));
    // The sender does not hear itself.
    assert!(sender.receive(Duration::from_millis(300)).is_err());
}
