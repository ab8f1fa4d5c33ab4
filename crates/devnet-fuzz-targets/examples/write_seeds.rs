//! Writes the seed inputs (see `devnet_fuzz_targets::seeds`) as
//! `DIR/<target>/seed-<n>`, for `cargo fuzz cmin` to merge into the corpus.

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).map(std::path::PathBuf::from).unwrap_or_else(|| "fuzz/seeds".into());
    for (i, (target, input)) in devnet_fuzz_targets::seeds::seeds().into_iter().enumerate() {
        let folder = dir.join(target);
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join(format!("seed-{i:03}")), input)?;
    }
    Ok(())
}
