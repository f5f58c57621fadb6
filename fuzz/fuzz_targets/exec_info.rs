//! `KUBERNETES_EXEC_INFO`, the JSON kubectl hands the plugin in its environment: any text gives
//! the exec info or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kubelogin::exec_credential::parse_exec_info(Some(text));
    }
});
