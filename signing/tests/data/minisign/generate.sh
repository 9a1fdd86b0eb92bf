#!/bin/sh
# Regenerates the minisign test vectors in this folder with the real minisign
# tool (Debian's minisign 0.11 was used). Run from this folder:
#
#     sh generate.sh
#
# Files:
#   unencrypted.key/.pub   `minisign -G -W` key pair (minisign writes an all-zero checksum)
#   encrypted.key/.pub     `minisign -G` key pair, password "bankswap-test"
#   decrypted.key          encrypted.key after `minisign -C -W` (keeps a real BLAKE2b checksum)
#   release.json.minisig   `minisign -S` (prehashed "ED") of release.json by unencrypted.key
#   release.json.legacy.minisig   `minisign -S -l` (legacy "Ed") of the same file
#   release.json.decrypted.minisig  `minisign -S` of release.json by decrypted.key
set -eu
rm -f ./*.key ./*.pub ./*.minisig
minisign -G -W -p unencrypted.pub -s unencrypted.key
printf 'bankswap-test\nbankswap-test\n' | minisign -G -p encrypted.pub -s encrypted.key
cp encrypted.key decrypted.key
printf 'bankswap-test\n' | minisign -C -W -s decrypted.key
minisign -S -s unencrypted.key -m release.json -t 'bankswap test vector: prehashed'
minisign -S -l -s unencrypted.key -m release.json -x release.json.legacy.minisig \
    -t 'bankswap test vector: legacy'
minisign -S -s decrypted.key -m release.json -x release.json.decrypted.minisig \
    -t 'bankswap test vector: decrypted key'
