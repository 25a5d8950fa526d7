//! 1,000 users in 100 rooms log in concurrently against one relay. Bounded in count and time,
//! loopback only; it stops by itself.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use onair_engine::User;
use onair_engine::messages::{RequestBody, ResponseBody};
use onair_relay::Limits;

const USERS: usize = 1000;
const ROOMS: usize = 100;

#[test]
fn a_thousand_users_in_a_hundred_rooms_log_in_concurrently() {
    let relay = TestRelay::start_with(Limits::default());
    let rt = runtime();
    let started = Instant::now();
    let clients = rt.block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(USERS));
        let mut tasks = Vec::new();
        for i in 0..USERS {
            let (url, sign, barrier) = (relay.url(), relay.sign.to_hex(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut c = onair_engine::signal::SignalClient::connect(&url)
                    .await
                    .expect("connect");
                c.request(RequestBody::Hello {
                    protocol: onair_engine::messages::PROTOCOL_VERSION,
                    app_id: APP_ID,
                    resume: None,
                })
                .await
                .expect("hello");
                let answer = c
                    .request(RequestBody::Login {
                        room_id: format!("room-{}", i % ROOMS),
                        user: User::new(format!("user-{i}")),
                        token: None,
                        app_sign: Some(sign),
                        is_user_status_notify: true,
                    })
                    .await
                    .expect("login");
                let ResponseBody::Login { users, .. } = answer else {
                    panic!("unexpected answer {answer:?}")
                };
                // Everyone sees only members of their own room.
                assert!(users.len() < USERS / ROOMS);
                c
            }));
        }
        let mut clients = Vec::new();
        for t in tasks {
            clients.push(
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .expect("all logins finish within a minute")
                    .expect("task"),
            );
        }
        clients
    });
    let elapsed = started.elapsed();
    let m = relay.metrics();
    assert!(m.contains(&format!("onair_users {USERS}")), "{m}");
    assert!(m.contains(&format!("onair_rooms {ROOMS}")), "{m}");
    assert!(m.contains(&format!("onair_logins_total {USERS}")), "{m}");
    eprintln!("{USERS} logins in {ROOMS} rooms took {elapsed:?}");
    // A newcomer in one of the rooms sees exactly that room's ten users.
    let engine = relay.engine();
    engine.login_room("room-7", User::new("newcomer"), notify());
    let seen = until(&engine, "user room-7 ADD");
    let users = seen
        .last()
        .map(|s| s.split(' ').nth(3).unwrap_or("").split(',').count());
    assert_eq!(users, Some(USERS / ROOMS));
    rt.block_on(async move {
        for c in clients {
            c.close().await;
        }
    });
}
