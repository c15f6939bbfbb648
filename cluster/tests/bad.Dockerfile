# A deliberately bad Dockerfile: cluster/validate.sh fails unless hadolint
# rejects it (unpinned base image, `cd` in RUN, apt-get without cleanup).
FROM debian:latest
RUN cd /tmp && apt-get update && apt-get install -y curl
