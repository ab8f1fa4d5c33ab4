//! A W3C WebDriver client for the tray app's window, through tauri-driver
//! (which drives WebKitGTK's WebKitWebDriver) listening on a lab laptop's
//! loopback: each request is a `curl` run inside the laptop's network
//! namespace, so nothing of the test reaches the host's network.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::Res;

/// The key W3C WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver session: the app, started by the driver.
#[derive(Debug)]
pub struct Session {
    ns: String,
    base: String,
    id: String,
}

fn call(ns: &str, method: &str, url: &str, body: Option<&Value>) -> Res<Value> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "curl", "-sS", "--max-time", "60", "-X", method, url]);
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", &b.to_string()]);
    }
    let out = c.output().map_err(|e| format!("curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{method} {url}: curl failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{method} {url}: not JSON ({e}): {text}"))?;
    if let Some(err) = v["value"]["error"].as_str() {
        return Err(format!("{method} {url}: {err}: {}", v["value"]["message"]));
    }
    Ok(v["value"].clone())
}

impl Session {
    /// Starts `application` with `args` through the driver at `port` in `ns`.
    pub fn start(ns: &str, port: u16, application: &Path, args: &[&str]) -> Res<Session> {
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "tauri:options": {"application": application.display().to_string(), "args": args}
        }}});
        let v = call(ns, "POST", &format!("{base}/session"), Some(&caps))?;
        let id = v["sessionId"].as_str().ok_or_else(|| format!("no session id in {v}"))?.to_owned();
        Ok(Session { ns: ns.to_owned(), base, id })
    }

    fn at(&self, method: &str, path: &str, body: Option<&Value>) -> Res<Value> {
        call(&self.ns, method, &format!("{}/session/{}{}", self.base, self.id, path), body)
    }

    /// The text of every element matching a CSS selector, in one round
    /// trip (`textContent`, so text a screen reader gets counts too).
    pub fn texts(&self, css: &str) -> Res<Vec<String>> {
        let v = self.at(
            "POST",
            "/execute/sync",
            Some(&json!({
                "script": "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent)",
                "args": [css],
            })),
        )?;
        Ok(v.as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default())
    }

    /// The one element an XPath names.
    pub fn xpath(&self, xpath: &str) -> Res<String> {
        let v = self.at("POST", "/element", Some(&json!({"using": "xpath", "value": xpath})))?;
        v[ELEMENT].as_str().map(str::to_owned).ok_or_else(|| format!("no element for {xpath}: {v}"))
    }

    pub fn click(&self, element: &str) -> Res {
        self.at("POST", &format!("/element/{element}/click"), Some(&json!({}))).map(drop)
    }

    /// The text of the first element matching `css` ("" when none does).
    pub fn text_of(&self, css: &str) -> Res<String> {
        Ok(self.texts(css)?.into_iter().next().unwrap_or_default())
    }

    /// Waits until the first element matching `css` has text containing `want`.
    pub fn wait_text(&self, css: &str, want: &str, within: Duration) -> Res<String> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < within {
            // The page may be between renders: a stale element is retried.
            if let Ok(t) = self.text_of(css) {
                if t.contains(want) {
                    return Ok(t);
                }
                last = t;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!("{css} never read {want:?} within {within:?}; last: {last:?}"))
    }

    /// Runs a script in the page; its return value.
    pub fn script(&self, script: &str) -> Res<Value> {
        self.at("POST", "/execute/sync", Some(&json!({"script": script, "args": []})))
    }

    /// Saves a screenshot of the window, once the page has painted what its
    /// DOM holds now: taken at once after a change, WebKit could still show
    /// the window's first paint ("Waiting for devnet…").
    pub fn screenshot(&self, path: &Path) -> Res {
        self.at(
            "POST",
            "/execute/async",
            Some(&json!({
                "script": "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                "args": []
            })),
        )?;
        let v = self.at("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| format!("screenshot: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Closes the window (the app itself runs on: a tray app outlives it).
    pub fn close_window(&self) -> Res {
        self.at("DELETE", "/window", None).map(drop)
    }

    /// Ends the session (the driver closes the app).
    pub fn quit(&self) -> Res {
        self.at("DELETE", "", None).map(drop)
    }
}
