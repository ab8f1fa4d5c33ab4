//! Real debugger clients for the preflight trials, where no packaged one
//! runs headless: a Chrome DevTools Protocol client for the Node inspector
//! (the WebSocket an IDE opens) and a Debug Adapter Protocol client for
//! debugpy (the requests VS Code sends to attach). Each does real work
//! through the debugger (evaluates an expression, lists threads) and leaves
//! the debuggee running.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Lists the inspector's targets, opens the first one's WebSocket, and
/// evaluates `expression` in the debuggee; returns the result's value.
pub async fn cdp_evaluate(inspector: SocketAddr, expression: &str) -> Result<Value> {
    let mut s = TcpStream::connect(inspector).await.with_context(|| format!("connecting to {inspector}"))?;
    s.write_all(format!("GET /json/list HTTP/1.1\r\nHost: {inspector}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    // The inspector keeps the connection open after its answer: read by length.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let body = loop {
        let n =
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.context("no /json/list answer")??;
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
            });
            if n == 0 || len.is_some_and(|len| body.len() >= len) {
                break body.to_owned();
            }
        } else if n == 0 {
            bail!("the inspector closed the connection: {text}");
        }
    };
    let answer = String::from_utf8_lossy(&answer);
    let body = body.as_str();
    let targets: Value = serde_json::from_str(body).with_context(|| format!("the inspector's /json/list: {answer}"))?;
    let url = targets[0]["webSocketDebuggerUrl"].as_str().context("no webSocketDebuggerUrl")?.to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.with_context(|| format!("opening {url}"))?;
    let request =
        json!({"id": 1, "method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": true}});
    ws.send(Message::text(request.to_string())).await?;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.context("no CDP answer")? {
        if let Message::Text(t) = msg? {
            let v: Value = serde_json::from_str(&t)?;
            if v["id"] == 1 {
                let _ = ws.close(None).await;
                if let Some(e) = v.get("error") {
                    bail!("Runtime.evaluate failed: {e}");
                }
                return Ok(v["result"]["result"]["value"].clone());
            }
        }
    }
    bail!("the inspector closed the WebSocket")
}

async fn dap_send(w: &mut (impl AsyncWriteExt + Unpin), seq: &mut u64, command: &str, arguments: Value) -> Result<u64> {
    *seq += 1;
    let body = json!({"seq": *seq, "type": "request", "command": command, "arguments": arguments}).to_string();
    w.write_all(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).await?;
    Ok(*seq)
}

async fn dap_recv(r: &mut BufReader<impl AsyncReadExt + Unpin>) -> Result<Value> {
    let mut len = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            bail!("the adapter closed the connection");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length:") {
            len = Some(v.trim().parse::<usize>()?);
        }
    }
    let mut body = vec![0u8; len.context("a DAP message without Content-Length")?];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// Attaches to debugpy as VS Code does (initialize, attach, configurationDone),
/// lists the debuggee's threads, and disconnects without ending it. Returns
/// the thread names.
pub async fn dap_threads(adapter: SocketAddr) -> Result<Vec<String>> {
    let s = TcpStream::connect(adapter).await.with_context(|| format!("connecting to {adapter}"))?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut seq = 0;
    let init = json!({"clientID": "devnet-lab", "adapterID": "debugpy", "pathFormat": "path", "linesStartAt1": true, "columnsStartAt1": true});
    dap_send(&mut w, &mut seq, "initialize", init).await?;
    let mut attach_seq = None;
    let mut threads_seq = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, dap_recv(&mut r)).await.context("debugpy stopped answering")??;
        match (msg["type"].as_str(), msg["command"].as_str(), msg["event"].as_str()) {
            (Some("response"), _, _) if msg["success"] == false => bail!("debugpy refused: {msg}"),
            (Some("response"), Some("initialize"), _) => {
                attach_seq = Some(dap_send(&mut w, &mut seq, "attach", json!({"justMyCode": false})).await?);
            }
            (Some("event"), _, Some("initialized")) => {
                dap_send(&mut w, &mut seq, "configurationDone", json!({})).await?;
            }
            (Some("response"), Some("attach"), _) if attach_seq.is_some() => {
                threads_seq = Some(dap_send(&mut w, &mut seq, "threads", json!({})).await?);
            }
            (Some("response"), Some("threads"), _) if threads_seq.is_some() => {
                let names = msg["body"]["threads"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["name"].as_str().map(str::to_owned))
                    .collect();
                dap_send(&mut w, &mut seq, "disconnect", json!({"terminateDebuggee": false})).await?;
                // Wait for the answer, so the adapter frees its slot before we go.
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Ok(m) = dap_recv(&mut r).await {
                        if m["command"] == "disconnect" {
                            break;
                        }
                    }
                })
                .await;
                return Ok(names);
            }
            _ => {}
        }
    }
}
