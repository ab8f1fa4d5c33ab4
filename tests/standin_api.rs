//! The **stand-in API server** (a real one cannot run here) must answer as
//! the real one does, or the tests built on it prove nothing: `kube`'s own
//! typed client drives it on loopback, and devnet-kube's error mapping turns
//! its answers into the one-line messages users see.

use devnet_kube::{Cluster, ClusterOptions, KubeError};
use devnet_lab::apiserver::Loopback;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

const USERS: &str = "users:
- name: dev
  token: dev
  rules:
  - {verbs: [\"*\"], resources: [\"*\"]}
- name: viewer
  token: viewer
  rules:
  - {verbs: [get, list, watch], resources: [\"*\"]}
- name: old
  token: old
  expired: true
";

async fn start(name: &str) -> (Loopback, String) {
    let ranges = vec!["10.96.0.0/16".parse().expect("range")];
    let s = Loopback::start(name, USERS, &["dev", "viewer", "old"], None, ranges, false).await.expect("stand-in");
    let kc = s.kubeconfig.display().to_string();
    (s, kc)
}

async fn cluster(kubeconfig: &str, context: &str) -> Result<Cluster, KubeError> {
    Cluster::connect(&ClusterOptions {
        kubeconfig: Some(kubeconfig.into()),
        context: Some(context.into()),
        ..Default::default()
    })
    .await
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}})).expect("cm")
}

#[tokio::test]
async fn errors_are_worded_as_the_real_server_words_them() {
    let (_stand_in, kc) = start("errors").await;
    let dev = cluster(&kc, "dev").await.expect("dev connects");
    let cms: Api<ConfigMap> = Api::namespaced(dev.client.clone(), "default");
    cms.create(&PostParams::default(), &cm("a")).await.expect("create");
    let kube::Error::Api(conflict) = cms.create(&PostParams::default(), &cm("a")).await.expect_err("409") else {
        panic!("not an API error")
    };
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(conflict.message, r#"configmaps "a" already exists"#);
    let kube::Error::Api(missing) = cms.get("nope").await.expect_err("404") else { panic!("not an API error") };
    assert_eq!((missing.code, missing.message.as_str()), (404, r#"configmaps "nope" not found"#));

    let viewer = cluster(&kc, "viewer").await.expect("viewer connects");
    let cms: Api<ConfigMap> = Api::namespaced(viewer.client.clone(), "default");
    let kube::Error::Api(denied) = cms.create(&PostParams::default(), &cm("b")).await.expect_err("403") else {
        panic!("not an API error")
    };
    assert_eq!(denied.code, 403);
    assert_eq!(
        denied.message,
        r#"configmaps is forbidden: User "viewer" cannot create resource "configmaps" in API group "" in the namespace "default""#
    );
    assert!(!viewer.can_i("create", "", "pods/portforward", Some("devnet")).await.expect("review"));
    assert!(dev.can_i("create", "", "pods/portforward", Some("devnet")).await.expect("review"));

    let err = cluster(&kc, "old").await.expect_err("an expired token is refused");
    assert!(matches!(err, KubeError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("log in again"), "{err}");
}

#[tokio::test]
async fn watch_sees_what_is_created_after_it_started() {
    let (_stand_in, kc) = start("watch").await;
    let dev = cluster(&kc, "dev").await.expect("connect");
    let cms: Api<ConfigMap> = Api::namespaced(dev.client.clone(), "kube-system");
    cms.create(&PostParams::default(), &cm("before")).await.expect("create");
    let list = cms.list(&Default::default()).await.expect("list");
    let rv = list.metadata.resource_version.clone().expect("list resourceVersion");
    let mut events = cms.watch(&WatchParams::default().timeout(10), &rv).await.expect("watch").boxed();
    cms.create(&PostParams::default(), &cm("after")).await.expect("create");
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .expect("stream open")
        .expect("event");
    let WatchEvent::Added(obj) = first else { panic!("expected ADDED, got {first:?}") };
    assert_eq!(obj.metadata.name.as_deref(), Some("after"), "only changes after the resourceVersion");
}
