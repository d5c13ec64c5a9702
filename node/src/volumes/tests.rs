//! Unit tests in temp dirs (tmpfs off), one per volume kind, plus mounts and updates.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, ConfigMapVolumeSource, Container, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, KeyToPath,
    ObjectFieldSelector, PodSpec, ProjectedVolumeSource, ResourceFieldSelector,
    ResourceRequirements, SecretProjection, SecretVolumeSource, Service, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

#[derive(Default)]
struct Sources {
    config_maps: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl EnvSources for Sources {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.config_maps.lock().unwrap().get(name).cloned()
    }
    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.secrets.get(name).cloned()
    }
    fn services(&self) -> Vec<Service> {
        Vec::new()
    }
    fn allocatable(&self, _resource: &str) -> Option<String> {
        Some("4".into())
    }
}

fn sources() -> Sources {
    let s = Sources::default();
    s.config_maps.lock().unwrap().insert(
        "cfg".into(),
        BTreeMap::from([("a".into(), "A".into()), ("b".into(), "B".into())]),
    );
    Sources {
        secrets: BTreeMap::from([(
            "sec".into(),
            BTreeMap::from([("token".into(), b"s3cret".to_vec())]),
        )]),
        ..s
    }
}

fn pod(volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn vol(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

const OFF: VolumeOptions = VolumeOptions { tmpfs: false };

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn config_map_all_keys_items_modes_and_atomic_update() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources();
    let all = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            default_mode: Some(0o600),
            ..Default::default()
        }),
        ..vol("all")
    };
    let some = Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            items: Some(vec![KeyToPath {
                key: "b".into(),
                path: "dir/bee.txt".into(),
                mode: Some(0o400),
            }]),
            ..Default::default()
        }),
        ..vol("some")
    };
    let p = pod(vec![all, some]);
    let v = PodVolumes::setup(&p, tmp.path(), &s, OFF).unwrap();
    let all = v.path("all").unwrap();
    assert_eq!(read(&all.join("a")), "A");
    assert_eq!(mode(&all.join("a")), 0o600);
    assert!(
        std::fs::symlink_metadata(all.join("a"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_link(all.join("a")).unwrap(),
        Path::new("..data/a")
    );
    let some = v.path("some").unwrap();
    assert_eq!(read(&some.join("dir/bee.txt")), "B");
    assert_eq!(mode(&some.join("dir/bee.txt")), 0o400);
    assert!(!some.join("a").exists());

    let before = std::fs::read_link(all.join("..data")).unwrap();
    v.update(&p, &s).unwrap();
    assert_eq!(
        std::fs::read_link(all.join("..data")).unwrap(),
        before,
        "no change, no swap"
    );
    s.config_maps.lock().unwrap().insert(
        "cfg".into(),
        BTreeMap::from([("a".into(), "A2".into()), ("c".into(), "C".into())]),
    );
    // "some" now names a missing key: an error, its old files stay; "all" is refreshed.
    assert!(matches!(
        v.update(&p, &s).unwrap_err(),
        VolumeError::KeyMissing { .. }
    ));
    assert_eq!(read(&all.join("a")), "A2");
    assert_eq!(read(&all.join("c")), "C");
    assert!(
        std::fs::symlink_metadata(all.join("b")).is_err(),
        "removed key's link is gone"
    );
    assert!(!all.join(&before).exists(), "old data dir removed");
    assert_eq!(read(&some.join("dir/bee.txt")), "B");
}

#[test]
fn missing_sources_and_optional() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources();
    let missing = |optional| Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "nope".into(),
            optional: Some(optional),
            ..Default::default()
        }),
        ..vol("m")
    };
    let err = PodVolumes::setup(&pod(vec![missing(false)]), tmp.path(), &s, OFF).unwrap_err();
    assert!(
        err.to_string().contains("configmap \"nope\" not found"),
        "{err}"
    );
    let v = PodVolumes::setup(&pod(vec![missing(true)]), tmp.path(), &s, OFF).unwrap();
    assert!(v.path("m").unwrap().is_dir());
}

#[test]
fn secret_default_mode_and_items() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources();
    let v = Volume {
        secret: Some(SecretVolumeSource {
            secret_name: Some("sec".into()),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..vol("s")
    };
    let vols = PodVolumes::setup(&pod(vec![v]), tmp.path(), &s, OFF).unwrap();
    let f = vols.path("s").unwrap().join("token");
    assert_eq!(read(&f), "s3cret");
    assert_eq!(mode(&f), 0o440);
}

#[test]
fn downward_api_fields_and_resources() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources();
    let v = Volume {
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![
                DownwardAPIVolumeFile {
                    path: "labels".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.labels".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                DownwardAPIVolumeFile {
                    path: "name".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                DownwardAPIVolumeFile {
                    path: "mem".into(),
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: Some("app".into()),
                        resource: "limits.memory".into(),
                        divisor: Some(Quantity("1Mi".into())),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..vol("d")
    };
    let vols = PodVolumes::setup(&pod(vec![v]), tmp.path(), &s, OFF).unwrap();
    let d = vols.path("d").unwrap();
    assert_eq!(read(&d.join("labels")), "app=\"web\"");
    assert_eq!(read(&d.join("name")), "web");
    assert_eq!(read(&d.join("mem")), "64");
}

#[test]
fn projected_combines_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources();
    let v = Volume {
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "cfg".into(),
                        items: Some(vec![KeyToPath {
                            key: "a".into(),
                            path: "cfg/a".into(),
                            mode: None,
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: "sec".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..vol("p")
    };
    let vols = PodVolumes::setup(&pod(vec![v]), tmp.path(), &s, OFF).unwrap();
    let p = vols.path("p").unwrap();
    assert_eq!(read(&p.join("cfg/a")), "A");
    assert_eq!(read(&p.join("token")), "s3cret");
    assert_eq!(mode(&p.join("token")), 0o444);
}

#[test]
fn empty_dir_host_path_and_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources();
    let host = tmp.path().join("host/data");
    let hp = |t: &str, p: &Path| Volume {
        host_path: Some(HostPathVolumeSource {
            path: p.display().to_string(),
            type_: Some(t.into()),
        }),
        ..vol("h")
    };
    let err =
        PodVolumes::setup(&pod(vec![hp("Directory", &host)]), tmp.path(), &s, OFF).unwrap_err();
    assert!(matches!(err, VolumeError::HostPathType { .. }), "{err}");
    let file = tmp.path().join("f.txt");
    let v = PodVolumes::setup(&pod(vec![hp("FileOrCreate", &file)]), tmp.path(), &s, OFF).unwrap();
    assert!(file.is_file());
    assert_eq!(v.path("h").unwrap(), file);
    assert!(PodVolumes::setup(&pod(vec![hp("Directory", &file)]), tmp.path(), &s, OFF).is_err());

    let volumes = vec![
        hp("DirectoryOrCreate", &host),
        Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..vol("scratch")
        },
        Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".into(),
                ..Default::default()
            }),
            ..vol("cfg")
        },
    ];
    let v = PodVolumes::setup(&pod(volumes), tmp.path(), &s, OFF).unwrap();
    assert!(host.is_dir());
    let scratch = v.path("scratch").unwrap().to_path_buf();
    assert_eq!(scratch, tmp.path().join("volumes/scratch"));
    assert_eq!(mode(&scratch), 0o777);
    let c = Container {
        name: "app".into(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "scratch".into(),
                mount_path: "/scratch".into(),
                sub_path: Some("sub".into()),
                ..Default::default()
            },
            VolumeMount {
                name: "cfg".into(),
                mount_path: "/etc/cfg".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "h".into(),
                mount_path: "/data".into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let mounts = v.mounts(&c).unwrap();
    assert_eq!(
        mounts,
        vec![
            Mount {
                source: scratch.join("sub"),
                target: "/scratch".into(),
                read_only: false
            },
            Mount {
                source: tmp.path().join("volumes/cfg"),
                target: "/etc/cfg".into(),
                read_only: true
            },
            Mount {
                source: host.clone(),
                target: "/data".into(),
                read_only: true
            },
        ]
    );
    assert!(scratch.join("sub").is_dir(), "missing subPath created");
    let bad = Container {
        volume_mounts: Some(vec![VolumeMount {
            name: "nope".into(),
            mount_path: "/x".into(),
            ..Default::default()
        }]),
        ..c.clone()
    };
    assert!(matches!(
        v.mounts(&bad).unwrap_err(),
        VolumeError::NoVolume { .. }
    ));
    let escape = Container {
        volume_mounts: Some(vec![VolumeMount {
            name: "scratch".into(),
            mount_path: "/x".into(),
            sub_path: Some("../../etc".into()),
            ..Default::default()
        }]),
        ..c
    };
    assert!(matches!(
        v.mounts(&escape).unwrap_err(),
        VolumeError::BadPath(_)
    ));
    v.teardown().unwrap();
    assert!(!tmp.path().join("volumes").exists());
    assert!(host.is_dir(), "hostPath is kept");
}

#[test]
fn bad_item_paths_rejected() {
    for p in ["../x", "/abs", "a/../../b", "..data", ""] {
        assert!(check_path(p).is_err(), "{p}");
    }
    check_path("a/b.txt").unwrap();
}

#[test]
fn a_mounted_tmpfs_is_a_mount_point_and_mountinfo_agrees() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("m");
    std::fs::create_dir(&sub).unwrap();
    assert!(!is_mount_point(&sub));
    rustix::mount::mount(
        "tmpfs",
        &sub,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    let (by_statx, listed) = (is_mount_point(&sub), mounts_under(dir.path()));
    rustix::mount::unmount(&sub, rustix::mount::UnmountFlags::DETACH).unwrap();
    assert!(by_statx);
    assert_eq!(listed, vec![sub.clone()]);
    assert!(!is_mount_point(dir.path()));
    assert!(!is_mount_point(&sub), "unmounted again");
    assert!(!is_mount_point(&dir.path().join("missing")));
}

#[test]
fn teardown_through_a_symlinked_path_unmounts_and_removes() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir_all(real.join("volumes/secret")).unwrap();
    rustix::mount::mount(
        "tmpfs",
        real.join("volumes/secret"),
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
    let result = teardown_dir(&dir.path().join("link/./volumes"));
    if is_mount_point(&real.join("volumes/secret")) {
        rustix::mount::unmount(
            real.join("volumes/secret"),
            rustix::mount::UnmountFlags::DETACH,
        )
        .unwrap();
    }
    result.unwrap();
    assert!(!real.join("volumes").exists());
}
