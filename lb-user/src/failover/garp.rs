//! Gratuitous ARP: the Ethernet frame that tells a segment "this IPv4 address
//! is now at this MAC", and the packet socket that sends it on one interface.
//! The form is keepalived's: a broadcast ARP request whose sender and target
//! protocol addresses are both the floating address and whose target hardware
//! address is zero. Receivers that already have a neighbour entry for the
//! address replace its MAC with ours.

use std::{io, mem::size_of, net::Ipv4Addr};

use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};

/// An Ethernet (MAC) address.
pub type Mac = [u8; 6];

pub const BROADCAST_MAC: Mac = [0xff; 6];
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv4, ARP's protocol type for IPv4 addresses.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// ARP hardware type "Ethernet".
pub const HARDWARE_ETHERNET: u16 = 1;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;
const ETHERNET_HEADER_LEN: usize = 14;
const ARP_IPV4_LEN: usize = 28;
/// An Ethernet frame carrying an IPv4 ARP packet, without padding (the NIC or
/// the veth pads it to the 60-byte minimum).
pub const FRAME_LEN: usize = ETHERNET_HEADER_LEN + ARP_IPV4_LEN;

/// An IPv4-over-Ethernet ARP packet and the Ethernet header around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    pub destination: Mac,
    pub source: Mac,
    pub op: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl ArpFrame {
    /// The gratuitous ARP announcing `address` at `mac`.
    #[must_use]
    pub fn gratuitous(mac: Mac, address: Ipv4Addr) -> Self {
        Self {
            destination: BROADCAST_MAC,
            source: mac,
            op: OP_REQUEST,
            sender_mac: mac,
            sender_ip: address,
            target_mac: [0; 6],
            target_ip: address,
        }
    }

    /// The frame's bytes, ready for a raw packet socket.
    #[must_use]
    pub fn encode(&self) -> [u8; FRAME_LEN] {
        let mut frame = [0; FRAME_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            frame[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.destination);
        put(&self.source);
        put(&ETHERTYPE_ARP.to_be_bytes());
        put(&HARDWARE_ETHERNET.to_be_bytes());
        put(&ETHERTYPE_IPV4.to_be_bytes());
        // Hardware and protocol address lengths.
        put(&[6, 4]);
        put(&self.op.to_be_bytes());
        put(&self.sender_mac);
        put(&self.sender_ip.octets());
        put(&self.target_mac);
        put(&self.target_ip.octets());
        frame
    }
}

/// A packet socket that sends whole Ethernet frames out of one interface.
/// It is opened with protocol 0, so it receives nothing and no frames queue up
/// on it between announcements.
pub struct PacketSender {
    socket: Socket,
    destination: SockAddr,
}

impl PacketSender {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range"))?;
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: sockaddr_ll is one of this platform's sockaddr types, which
        // is what view_as requires; the storage is zeroed, a valid sockaddr_ll.
        let link = unsafe { storage.view_as::<libc::sockaddr_ll>() };
        link.sll_family = libc::AF_PACKET as libc::sa_family_t;
        link.sll_protocol = ETHERTYPE_ARP.to_be();
        link.sll_ifindex = ifindex;
        link.sll_halen = 6;
        link.sll_addr[..6].copy_from_slice(&BROADCAST_MAC);
        let length = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: the family is AF_PACKET and the first `length` bytes hold
        // the sockaddr_ll written above.
        let destination = unsafe { SockAddr::new(storage, length) };
        Ok(Self { socket, destination })
    }

    /// Sends one frame (Ethernet header included) out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let sent = self.socket.send_to(frame, &self.destination)?;
        if sent != frame.len() {
            return Err(io::Error::other(format!("sent {sent} of {} bytes", frame.len())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_is_a_broadcast_request_for_the_address_itself() {
        let mac = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
        let frame = ArpFrame::gratuitous(mac, Ipv4Addr::new(198, 51, 100, 100)).encode();
        #[rustfmt::skip]
        let expected: [u8; FRAME_LEN] = [
            // Ethernet: broadcast destination, our source, ARP.
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,
            0x08, 0x06,
            // ARP: Ethernet, IPv4, lengths 6 and 4, request.
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            // Sender: our MAC, the VIP.
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, 198, 51, 100, 100,
            // Target: no MAC, the VIP again.
            0, 0, 0, 0, 0, 0, 198, 51, 100, 100,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn a_reply_encodes_its_operation_and_both_parties() {
        let frame = ArpFrame {
            destination: [1, 2, 3, 4, 5, 6],
            source: [7, 8, 9, 10, 11, 12],
            op: OP_REPLY,
            sender_mac: [7, 8, 9, 10, 11, 12],
            sender_ip: Ipv4Addr::new(10, 0, 0, 2),
            target_mac: [1, 2, 3, 4, 5, 6],
            target_ip: Ipv4Addr::new(10, 0, 0, 1),
        }
        .encode();
        assert_eq!(&frame[..6], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(&frame[20..22], &[0, 2]);
        assert_eq!(&frame[28..32], &[10, 0, 0, 2]);
        assert_eq!(&frame[32..38], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(&frame[38..], &[10, 0, 0, 1]);
    }
}
