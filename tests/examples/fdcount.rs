//! The fds a pool holds by itself: `cargo run --release -p pidring-tests --example fdcount`.
fn fds() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|e| {
            let link = std::fs::read_link(e.path()).unwrap_or_default();
            format!("{} -> {}", e.file_name().to_string_lossy(), link.display())
        })
        .collect()
}
fn main() {
    let before = fds();
    for backend in [pidring::Backend::Uring, pidring::Backend::Epoll] {
        let pool = pidring::Pool::builder()
            .workers(2)
            .backend(backend)
            .build()
            .unwrap();
        let with = fds();
        println!(
            "{backend:?}: {} fds before, {} with a 2-worker pool",
            before.len(),
            with.len()
        );
        for f in with.iter().filter(|f| !before.contains(f)) {
            println!("  {f}");
        }
        drop(pool);
    }
}
