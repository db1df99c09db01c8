"""What is measured, one module per scenario; each command at benchmarks/ runs one of them."""
