# Sourced by scripts/image-test.sh and scripts/kube-play-test.sh: the
# original README's examples, and what a script sees of the sandbox, sent
# to a running server, and the wait before the callers read its
# processes. The caller defines say, fail, execute (which POSTs its one
# argument, a JSON request, to /execute and prints the answer) and
# metrics (which prints /metrics).

# check NAME REQUEST TEST: the answer to REQUEST passes the jq TEST.
check() {
	local answer
	answer=$(execute "$2")
	echo "$answer" | jq -e "$3" >/dev/null || fail "$1 answered: $answer"
	say "ok: $1: $(echo "$answer" | jq -c '.result')"
}

check_examples() {
	check hello '{"script": "def main():\n    return {\"message\": \"Hello, World!\", \"data\": [1, 2, 3]}"}' \
		'.result == {"message": "Hello, World!", "data": [1, 2, 3]}'
	check numpy '{"script": "import numpy as np\ndef main():\n    data = np.random.randn(10)\n    return {\"mean\": float(np.mean(data)), \"data\": data.tolist()}"}' \
		'(.result.data | length) == 10 and (.result.mean | type) == "number"'
	check pandas '{"script": "import pandas as pd\nimport numpy as np\ndef main():\n    df = pd.DataFrame({\"x\": np.random.randn(5), \"y\": np.random.randn(5)})\n    return {\"correlation\": float(df[\"x\"].corr(df[\"y\"])), \"shape\": list(df.shape)}"}' \
		'.result.shape == [5, 2] and (.result.correlation | type) == "number"'
	check interfaces '{"script": "import pathlib\ndef main():\n    lines = pathlib.Path(\"/proc/self/net/dev\").read_text().splitlines()[2:]\n    return [l.split(\":\")[0].strip() for l in lines]"}' \
		'.result == ["lo"]'
	check uid '{"script": "import os\ndef main():\n    return [os.getuid(), os.geteuid(), os.getgid()]"}' \
		'.result == [65534, 65534, 65534]'
}

# wait_settled waits, at most 60 s, until the server starts nothing: no
# zygote starting (a rotation's successor starts ahead of its turn) and no
# sandbox being built, as /metrics says; without requests nothing starts
# after that. Until it has sealed itself, each of those holds
# capabilities in its own user namespace, before any script has run: the
# callers' checks that no process has one read the processes after this.
wait_settled() {
	for _ in $(seq 1 120); do
		settled && return
		sleep 0.5
	done
	fail "the server did not settle within 60 s (a zygote starting or a sandbox building, says /metrics)"
}

settled() {
	metrics | awk '
		$1 ~ /^pyexec_zygotes\{.*state="starting"/ { starting += $2 }
		$1 ~ /^pyexec_pool_building/ { building += $2; seen = 1 }
		END { exit !(seen && starting == 0 && building == 0) }'
}
