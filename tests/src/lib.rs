//! Whole-system test support (kube-apiserver stand-in, process helpers).
