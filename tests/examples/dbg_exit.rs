use pidring::{Event, Pool, TaskSpec};
fn main() {
    let pool = Pool::builder().workers(1).build().unwrap();
    let bin = std::env::args().nth(1).unwrap();
    for pre in std::env::args().skip(2) {
        println!(
            "pre {pre}: {:?}",
            pool.spawn(TaskSpec::new(&pre)).map(|h| h.id())
        );
    }
    println!(
        "nul: {:?}",
        pool.spawn(TaskSpec::new("nul\0byte")).map(|h| h.id())
    );
    let h = pool
        .spawn(TaskSpec::new(&bin).args(["helper", "exit=3"]))
        .unwrap();
    loop {
        let e = pool.events().recv().unwrap();
        println!("{e:?}");
        if let Event::Done { task, .. } = e {
            if task == h.id() {
                break;
            }
        }
    }
}
