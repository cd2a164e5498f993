//! The shared driver suite (containerd's snapshotter tests), run against every driver.
//! Needs root: the tests mount.

use strata_snapshot::testsuite::{run, run_on_btrfs};

macro_rules! driver_suite {
    ($driver:ident, $run:ident, $name:literal) => {
        mod $driver {
            use super::$run as run;
            driver_suite!(@tests $name, basic, stat_active, stat_committed, transitivity, prepare_view_failing, update,
                remove, walk, layer_file_update, remove_directory_in_lower_layer, chown, directory_permission_on_commit,
                remove_intermediate_snapshot, deleted_files_in_child_snapshot, move_file_from_lower_layer, view_readonly,
                stat_in_walk, close_twice, root_permission, rename, layers_128_mount, diff_reproduces_changes,
                volatile_record_lost);
        }
    };
    (@tests $name:literal, $($test:ident),*) => {
        $(#[test] fn $test() { run($name, stringify!($test)); })*
    };
}

driver_suite!(overlay2, run, "overlay2");
driver_suite!(vfs, run, "vfs");
// btrfs on this machine's ext4 root: the driver's own loop-backed pool.
driver_suite!(btrfs, run, "btrfs");
// btrfs on a root that is btrfs: subvolumes straight in the store.
driver_suite!(btrfs_native, run_on_btrfs, "btrfs");
// aufs: the userspace branch union over FUSE.
driver_suite!(aufs, run, "aufs");
// devicemapper: thin devices of strata's own pool, through FUSE and loop devices.
driver_suite!(devicemapper, run, "devicemapper");

#[test]
fn every_suite_test_is_run() {
    // The macro lists tests by hand; this keeps it in step with the suite.
    assert_eq!(strata_snapshot::testsuite::TESTS.len(), 23);
}
