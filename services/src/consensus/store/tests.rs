#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn a_store_of_another_node_is_refused() {
    let tmp = rpc_testkit::TestDir::new().unwrap();
    let d = tmp.path().join("data");
    drop(Store::open(&d, 1, "a").unwrap());
    assert!(Store::open(&d, 1, "a").is_ok());
    match Store::open(&d, 2, "a") {
        Err(StoreError::WrongNode {
            found: 1,
            expected: 2,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    tmp.passed();
}

#[test]
fn a_store_of_another_cluster_is_refused() {
    let tmp = rpc_testkit::TestDir::new().unwrap();
    let d = tmp.path().join("data");
    drop(Store::open(&d, 1, "blue").unwrap());
    let e = Store::open(&d, 1, "green").unwrap_err();
    match &e {
        StoreError::WrongCluster {
            found, expected, ..
        } => assert_eq!((found.as_str(), expected.as_str()), ("blue", "green")),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("belongs to cluster \"blue\""), "{e}");
    assert!(Store::open(&d, 1, "blue").is_ok());
    tmp.passed();
}

#[test]
fn a_corrupt_file_is_an_error_and_is_left_as_it_was() {
    let tmp = rpc_testkit::TestDir::new().unwrap();
    let d = tmp.path().to_path_buf();
    let junk = vec![0xa5u8; 8192];
    std::fs::write(d.join(FILE), &junk).unwrap();
    let e = Store::open(&d, 1, "a").unwrap_err();
    assert!(matches!(e, StoreError::Open { .. }), "{e:?}");
    assert_eq!(std::fs::read(d.join(FILE)).unwrap(), junk);
    tmp.passed();
}
