pub fn run(_b: &std::path::Path, _w: bool) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
