//! `requests_per_second`: every request to a capped registry is spread out, so no second holds
//! more than the cap, however many images are compared at once.

mod harness;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use harness::*;

#[test]
fn a_capped_registry_never_sees_more_than_its_cap_in_any_second() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let target = Registry::start();
    let image = Image::single(Flavor::Oci, 1, 256);
    let names: Vec<String> = (0..50).map(|i| format!("app{i}")).collect();
    for name in &names {
        image.push(&upstream, name, "1");
    }
    let images: Vec<String> = names.iter().map(|n| format!("{n}:1")).collect();
    let images: Vec<&str> = images.iter().map(String::as_str).collect();
    let sandbox = Sandbox::new();
    sandbox.write_config(&harness::cli::images_config(
        source.host(),
        target.host(),
        &images,
        &format!(
            "[registries.\"{}\"]\nrequests_per_second = 20\n",
            source.host()
        ),
    ));
    sandbox.regmirror().arg("--once").run().assert_success();

    // An unchanged pass: 50 HEADs at once, were they not spread.
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let log = seen.clone();
    source.add_rule(move |_: &RequestInfo| {
        log.lock().unwrap().push(Instant::now());
        None
    });
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("unchanged 50");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 50, "{} requests", seen.len());
    let busiest = seen
        .iter()
        .map(|start| {
            seen.iter()
                .filter(|t| **t >= *start && t.duration_since(*start).as_secs_f64() < 1.0)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        busiest <= 21,
        "{busiest} requests in one second, over the cap of 20"
    );
}
