//! Translation of loaded classic-BPF programs to eBPF for rbpf (work in progress).
