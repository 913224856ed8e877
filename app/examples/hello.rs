//! Bare axum hello-world: the benchmark baseline for `bench/app-http.sh`.
//!
//! Run with `cargo run --release -p selfheal-app --example hello -- 127.0.0.1:8081`.
//! Same runtime and JSON shape as `selfheal-app`'s `GET /`, none of its middleware.

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let app = Router::new().route(
        "/",
        get(|| async {
            Json(json!({
                "service": "hello",
                "version": "0.0.0",
                "pod": "bench",
                "track": "stable",
                "message": "hello from selfheal-app",
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
