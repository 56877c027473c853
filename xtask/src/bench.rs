use anyhow::Context;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_tests::{fixture, packet::{self, Frame}, testbed::*};

fn tr(p: &Xdp, frame: &[u8], ifindex: u32, repeat: u32) -> anyhow::Result<(u32, u64, Vec<u8>)> {
    let mut ctx = [0u8; 24];
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 256];
    let mut o = TestRunOptions::new();
    o.data_in = Some(frame);
    o.data_out = Some(&mut out);
    o.ctx_in = Some(&ctx);
    o.repeat = repeat;
    let r = p.test_run(o)?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, r.duration.as_nanos() as u64, out))
}

pub fn run(_b: &std::path::Path, _w: bool) -> anyhow::Result<()> {
    fixture::with_fixture(&fixture::services(), |fx| -> anyhow::Result<()> {
        let mut dp = fx.dataplane.lock().unwrap();
        let c = |dp: &lb_user::dataplane::Dataplane| dp.counters().unwrap().into_iter().filter(|(_, v)| *v > 0).map(|(c, v)| format!("{}={v}", c.name())).collect::<Vec<_>>().join(" ");
        let client = (CLIENT_ADDRS[0], 40000);
        let vip = (VIP, FRONTEND_PORT);
        let syn = Frame::tcp(client, vip, packet::SYN).build();
        let (a, d, out) = tr(dp.program()?, &syn, fx.public_ifindex, 1)?;
        println!("syn a={a} d={d} {:?}", packet::parse_and_verify(&out));
        println!("{}", c(&dp));
        let ack = Frame::tcp(client, vip, packet::ACK).with_payload(b"GET / HTTP/1.1\r\n\r\n").build();
        let (a, d, out) = tr(dp.program()?, &ack, fx.public_ifindex, 1000)?;
        println!("ack x1000 a={a} d={d} {:?}", packet::parse_and_verify(&out));
        println!("{}", c(&dp));
        let mut floor = aya::Ebpf::load(lb_user::dataplane::BENCH_FLOOR_OBJECT)?;
        let fp: &mut Xdp = floor.program_mut("bench_floor").context("x")?.try_into()?;
        fp.load()?;
        for rep in [1u32, 10, 1000, 1_000_000] {
            let n = 2_000_000 / rep.max(1) ;
            let n = n.clamp(1, 200_000);
            let t = std::time::Instant::now();
            let mut sum = 0u64;
            for _ in 0..n { sum += tr(fp, &syn, fx.public_ifindex, rep)?.1 * rep as u64; }
            println!("floor repeat={rep} calls={n} mean={:.1} ns wall/call={:?}", sum as f64 / (n as f64 * rep as f64), t.elapsed() / n);
        }
        for rep in [1u32, 1000] {
            let n = 200_000 / rep;
            let mut sum = 0u64;
            for _ in 0..n { sum += tr(dp.program()?, &ack, fx.public_ifindex, rep)?.1 * rep as u64; }
            println!("ack repeat={rep} mean={:.1}", sum as f64 / (n as f64 * rep as f64));
        }
        println!("{}", c(&dp));
        Ok(())
    })?
}
