"""`tcpserver --preload`: one of our Python programs run in the forked
child without exec (noexec), recognised by its launcher (launcher), with
what must be loaded before -u/-g (preload)."""
