"""pyexec: the Python half of the sandbox service.

Modules, one job each:

* protocol  -- the frames and messages of the channel and control socket
               (mirrors runner/protocol.go, the one written contract);
* zygote    -- the zygote: imports once, forks one sandbox per spawn;
* isolation -- what a fresh fork does to become a sandbox (namespaces,
               private /dev, /tmp and /proc, capabilities);
* syscalls  -- the seccomp allow list, built once, loaded in every sandbox;
* limits    -- the rlimits a sandbox sets on itself before the script;
* policy    -- checking a script before any of its code runs;
* script    -- running one script (or a batch, or a cell) and turning its
               outcome into a reply;
* results   -- mapping what main returned to plain JSON values;
* files     -- the request's files in, the output directory out;
* figures   -- matplotlib figures shown or left open, as output files;
* mplbackend -- the sandbox's matplotlib backend (Agg, and a show() that
               hands the figures to figures.py).

Nothing here is the security boundary on its own: the jail, the namespaces
and the seccomp filter are. The import policy is defence in depth only.
"""
