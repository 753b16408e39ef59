#!/bin/sh
# Deploys the image to Cloud Run's second-generation execution environment
# (a full Linux sandbox where nsjail can create namespaces; the first
# generation cannot). Usage: deploy/cloudrun.sh IMAGE [REGION]
set -eu
image=${1:?usage: deploy/cloudrun.sh IMAGE [REGION]}
region=${2:-us-central1}
exec gcloud run deploy pyexec \
	--image "$image" \
	--region "$region" \
	--execution-environment gen2 \
	--port 8080 \
	--cpu 2 --memory 4Gi \
	--concurrency 16 \
	--min-instances 1 --max-instances 20 \
	--no-cpu-throttling \
	--args="--warm,8,--max-busy,8"
