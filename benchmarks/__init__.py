"""Side-by-side benchmarks of indostar_ops against a bare fabric pool, pyinfra and Ansible (run on demand)."""
