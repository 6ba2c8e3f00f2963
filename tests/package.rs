//! The Debian package `scripts/package.sh` makes of the binary the suite
//! built, inspected without installing it: its files and their modes, its
//! control data and maintainer scripts, the extracted binary answering
//! `--version`, and its units passing `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;

use crate::support::{require_binary, text};

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{command:?}\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn the_package_holds_the_binary_units_completions_and_man_page_with_their_modes() {
    let Some(_) = require_binary("dpkg-deb", "dpkg") else { return };
    let Some(analyze) = require_binary("systemd-analyze", "systemd") else { return };
    let dir = tempfile::tempdir().expect("dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stdout = run(Command::new(root.join("scripts/package.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_apimon"), "--out"])
        .arg(dir.path())
        .env("DEB_COMPRESSION", "none"));
    let deb = stdout.lines().last().expect("the .deb's path").to_owned();
    assert!(deb.ends_with(".deb") && Path::new(&deb).is_file(), "{stdout}");

    // Files and modes, owned by root.
    let listing = run(Command::new("dpkg-deb").args(["-c", &deb]));
    let mode_of = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(".{path}")))
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"))
    };
    for (path, mode) in [
        ("/usr/bin/apimon", "-rwxr-xr-x root/root"),
        ("/lib/systemd/system/apimon.service", "-rw-r--r-- root/root"),
        ("/lib/systemd/system/apimon-executor.service", "-rw-r--r-- root/root"),
        ("/usr/share/bash-completion/completions/apimon", "-rw-r--r-- root/root"),
        ("/usr/share/zsh/vendor-completions/_apimon", "-rw-r--r-- root/root"),
        ("/usr/share/fish/vendor_completions.d/apimon.fish", "-rw-r--r-- root/root"),
        ("/usr/share/man/man1/apimon.1.gz", "-rw-r--r-- root/root"),
        ("/usr/share/doc/apimon/copyright", "-rw-r--r-- root/root"),
        ("/usr/share/doc/apimon/operations.md", "-rw-r--r-- root/root"),
    ] {
        assert_eq!(mode_of(path), mode, "{path}");
    }
    assert!(
        !listing.contains("/usr/local/"),
        "a package never installs into /usr/local:\n{listing}"
    );

    // Control data and the maintainer scripts.
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").args(["-e", &deb]).arg(&control));
    let fields = std::fs::read_to_string(control.join("control")).expect("control");
    assert!(fields.contains(&format!("Version: {}\n", env!("CARGO_PKG_VERSION"))), "{fields}");
    // The suite's binary links this machine's glibc and OpenSSL: both named.
    assert!(fields.contains("Package: apimon\n") && fields.contains("libc6 (>= 2."), "{fields}");
    assert!(fields.contains("libssl3"), "{fields}");
    let postinst = control.join("postinst");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&postinst).expect("postinst").permissions(),
    );
    assert_eq!(mode & 0o777, 0o755);
    let script = std::fs::read_to_string(&postinst).expect("postinst");
    assert!(script.contains("useradd --system --gid apimon"), "{script}");
    run(Command::new("sh").arg("-n").arg(&postinst));

    // The extracted binary runs; the completions and the man page are its own.
    let extracted = dir.path().join("root");
    run(Command::new("dpkg-deb").args(["-x", &deb]).arg(&extracted));
    let binary = extracted.join("usr/bin/apimon");
    let version = run(Command::new(&binary).arg("--version"));
    assert!(
        version.starts_with(&format!("apimon {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let bash =
        std::fs::read_to_string(extracted.join("usr/share/bash-completion/completions/apimon"))
            .expect("bash completions");
    assert!(bash.contains("bootstrap") && bash.contains("--base-missing"), "{bash}");
    let man = run(Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {}", extracted.join("usr/share/man/man1/apimon.1.gz").display())));
    assert!(man.contains(".TH apimon") && man.contains("bootstrap"), "{man}");

    // The units verify, with the binary where the package puts it.
    for unit in ["apimon.service", "apimon-executor.service"] {
        let unit_text =
            std::fs::read_to_string(extracted.join("lib/systemd/system").join(unit)).expect("unit");
        assert!(unit_text.contains("ExecStart=/usr/bin/apimon "), "{unit}");
        let path = dir.path().join(unit);
        std::fs::write(&path, unit_text.replace("/usr/bin/apimon", &binary.to_string_lossy()))
            .expect("unit copy");
        crate::support::systemd_verify(&analyze, &path, unit);
    }
}
