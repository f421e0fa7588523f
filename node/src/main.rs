//! The `ferry` binary.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the ferry broker is being built; see README.md")
}
