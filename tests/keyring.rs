//! The studio keeps the app sign and token in the OS keyring where there is one — here a real
//! gnome-keyring on a private D-Bus session bus this test starts — and, where there is none,
//! keeps them in its settings in plain text (and its connect dialog says so).

use std::process::{Child, Command, Stdio};

use onair::studio::app::StudioApp;
use onair::studio::secrets;
use onair::studio::settings::{ConnectionSettings, Settings};

/// An eframe storage in memory.
#[derive(Default)]
struct MemoryStorage(std::collections::HashMap<String, String>);

impl eframe::Storage for MemoryStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

/// A private session bus with gnome-keyring's Secret Service, unlocked; stopped on drop.
struct PrivateKeyring {
    bus: Child,
    address: String,
    home: std::path::PathBuf,
}

impl PrivateKeyring {
    fn start() -> PrivateKeyring {
        let home = std::env::temp_dir().join(format!("onair-keyring-{}", std::process::id()));
        std::fs::create_dir_all(&home).expect("home");
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon (Debian's dbus package)");
        let mut address = String::new();
        {
            use std::io::BufRead as _;
            let out = bus.stdout.take().expect("stdout");
            std::io::BufReader::new(out)
                .read_line(&mut address)
                .expect("the bus address");
        }
        let address = address.trim().to_string();
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_RUNTIME_DIR", &home)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon (make test installs gnome-keyring)");
        {
            use std::io::Write as _;
            let mut stdin = keyring.stdin.take().expect("stdin");
            stdin.write_all(b"test-password").expect("unlock password");
        }
        let _ = keyring.wait();
        PrivateKeyring { bus, address, home }
    }
}

impl Drop for PrivateKeyring {
    fn drop(&mut self) {
        // The keyring daemon exits with its bus.
        let _ = self.bus.kill();
        let _ = self.bus.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn remote(sign: &str, token: &str) -> Settings {
    Settings {
        connection: ConnectionSettings::Remote {
            server: "ws://127.0.0.1:9".into(),
            app_id: 77,
            app_sign: sign.into(),
            token: token.into(),
        },
        rooms: vec![],
        auto_play: false,
        preview: false,
        ..Settings::default()
    }
}

#[test]
#[allow(unsafe_code)]
fn secrets_go_to_the_os_keyring_where_there_is_one_and_stay_in_plain_text_where_not() {
    let sign = "ab".repeat(32);
    // This test is the only one in its binary: nothing else reads the environment meanwhile.
    // SAFETY: no other thread of this process is running yet.
    unsafe {
        std::env::set_var(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/onair-bus",
        );
    }
    // No keyring: the secrets stay in the settings, and the dialog's warning applies.
    let kept = secrets::for_storage(remote(&sign, "tok"));
    assert!(!kept.secrets_in_keyring);
    assert_eq!(kept.connection, remote(&sign, "tok").connection);
    assert_eq!(secrets::available(), Some(false));

    let keyring = PrivateKeyring::start();
    // SAFETY: as above; the studio below starts its threads after this.
    unsafe {
        std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &keyring.address);
    }
    // The studio saves its settings: the secrets go to the keyring, not to the file.
    let ctx = eframe::egui::Context::default();
    let mut app = StudioApp::create(ctx.clone(), None, None, Some(remote(&sign, "tok")));
    let mut storage = MemoryStorage::default();
    eframe::App::save(&mut app, &mut storage);
    let written: String = storage.0.values().cloned().collect();
    assert!(
        !written.contains(&sign),
        "the app sign is in the settings file"
    );
    assert!(
        !written.contains("\"tok\""),
        "the token is in the settings file"
    );
    assert_eq!(secrets::available(), Some(true));
    assert_eq!(
        secrets::get("ws://127.0.0.1:9", 77).expect("keyring"),
        Some((sign.clone(), "tok".to_string()))
    );
    drop(app);
    // The next start reads them back.
    let again = StudioApp::create(ctx, None, Some(&storage), None);
    assert_eq!(
        again.current_settings().connection,
        remote(&sign, "tok").connection
    );
    drop(again);
}
