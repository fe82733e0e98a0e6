#!/usr/bin/env node
/*
 * Writes tests/data/browser_naming.jsonl: for real user agents, the $browser, $browser_version,
 * $os and $device that Mixpanel's web SDK (mixpanel-js) records for them.
 *
 * Run by hand, only when the pinned mixpanel-js version or the user-agent sample changes; the
 * package and its tests never need Node (tests/test_browser_names.py reads the committed file):
 *
 *     mkdir -p /tmp/mpjs && cd /tmp/mpjs
 *     npm install mixpanel-browser@2.83.0 user-agents@2.1.198
 *     NODE_PATH=/tmp/mpjs/node_modules node /path/to/repo/tools/derive_browser_expectations.js \
 *         > /path/to/repo/tests/data/browser_naming.jsonl
 *
 * Sources:
 * - user-agents (npm): user agents seen by real browsers with each one's share of traffic
 *   ("weight") and its real navigator.vendor. Entries differing only in screen size are merged
 *   and their weights added.
 * - EXTRA_USER_AGENTS below: browsers that sample lacks or barely has (Firefox, in-app browsers,
 *   Samsung Internet, Opera, Presto, IE, ...), with weight 0 and the vendor each really reports,
 *   so they are checked without changing the weighted agreement.
 *
 * For every user agent mixpanel-js's CommonJS build is evaluated afresh in its own V8 context
 * whose window has that navigator.userAgent and navigator.vendor (window.opera only for Presto
 * Opera, the one browser that had it), because the SDK reads them once, when it loads. Then its
 * own _.info.properties() gives the properties, empty ones already stripped as the SDK strips
 * them; a null $browser_version is left out, as the exporter leaves it out.
 */
'use strict';

const fs = require('fs');
const path = require('path');
const vm = require('vm');

// Read from the packages' directories: their "exports" maps hide these files from require().
const MIXPANEL_DIR = path.dirname(path.dirname(require.resolve('mixpanel-browser')));
const MIXPANEL_BUILD = path.join(MIXPANEL_DIR, 'dist', 'mixpanel.cjs.js');
const MIXPANEL_VERSION = readJson(path.join(MIXPANEL_DIR, 'package.json')).version;
const SAMPLE_DIR = path.dirname(path.dirname(require.resolve('user-agents')));
const SAMPLE = readJson(path.join(SAMPLE_DIR, 'dist', 'user-agents.json'));
const SAMPLE_VERSION = readJson(path.join(SAMPLE_DIR, 'package.json')).version;
function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

const NAMED = ['$browser', '$browser_version', '$os', '$device'];

const APPLE = 'Apple Computer, Inc.';
const GOOGLE = 'Google Inc.';
const EXTRA_USER_AGENTS = [
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0', ''],
  ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0', ''],
  ['Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0', ''],
  ['Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0', ''],
  ['Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0', ''],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
   'FxiOS/133.0 Mobile/15E148 Safari/605.1.15', APPLE],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
   'CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1', APPLE],
  ['Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
   'CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1', APPLE],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
   'EdgiOS/131.0.2903.68 Version/17.0 Mobile/15E148 Safari/604.1', APPLE],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
   'GSA/343.0.695551749 Mobile/15E148 Safari/604.1', APPLE],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
   'Mobile/22B83 [FBAN/FBIOS;FBAV/489.0.0.47.107;FBBV/660110397;FBDV/iPhone15,2;FBMD/iPhone;' +
   'FBSN/iOS;FBSV/18.1;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/661894178]', APPLE],
  ['Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
   'Mobile/22B83 Instagram 357.0.0.25.101 (iPhone15,2; iOS 18_1; en_US; en; scale=3.00; 1179x2556; 654612349)',
   APPLE],
  ['Mozilla/5.0 (iPod touch; CPU iPhone OS 15_8 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
   'Version/15.6 Mobile/15E148 Safari/604.1', APPLE],
  ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
   'Version/18.1 Safari/605.1.15', APPLE],
  ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0', GOOGLE],
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Chrome/52.0.2743.116 Safari/537.36 Edge/15.15063', ''],
  ['Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Chrome/131.0.0.0 Mobile Safari/537.36 EdgA/131.0.0.0', GOOGLE],
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Chrome/131.0.0.0 Safari/537.36 OPR/116.0.0.0', GOOGLE],
  ['Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Chrome/131.0.0.0 Mobile Safari/537.36 OPR/86.0.0.0', GOOGLE],
  ['Opera/9.80 (Windows NT 6.1; WOW64) Presto/2.12.388 Version/12.18', ''],
  ['Opera/9.80 (J2ME/MIDP; Opera Mini/9.80 (S60; SymbOS; Opera Mobi/23.348; U; en) Presto/2.5.25 Version/10.54',
   ''],
  ['Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36', GOOGLE],
  ['Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'SamsungBrowser/25.0 Chrome/121.0.0.0 Safari/537.36', GOOGLE],
  ['Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240905.003; wv) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/489.0.0.66.81;]', GOOGLE],
  ['Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240905.003; wv) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 Instagram 357.0.0.47.89 Android', GOOGLE],
  ['Mozilla/5.0 (Linux; Android 12; SM-A525F) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Chrome/131.0.0.0 Mobile Safari/537.36 GSA/15.45.34.29.arm64', GOOGLE],
  ['Mozilla/5.0 (Linux; U; Android 4.0.3; ko-kr; LG-L160L Build/IML74K) AppleWebKit/534.30 (KHTML, like Gecko) ' +
   'Version/4.0 Mobile Safari/534.30', GOOGLE],
  ['Mozilla/5.0 (Linux; U; Android 10; en-US; RMX1971 Build/QKQ1.190918.001) AppleWebKit/537.36 ' +
   '(KHTML, like Gecko) Version/4.0 Chrome/78.0.3904.108 UCBrowser/13.4.0.1306 Mobile Safari/537.36', GOOGLE],
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Chrome/128.0.0.0 Whale/3.28.266.14 Safari/537.36', GOOGLE],
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Chrome/130.0.0.0 YaBrowser/24.12.0.0 Safari/537.36', GOOGLE],
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Chrome/131.0.0.0 Safari/537.36 Vivaldi/7.0.3495.18', GOOGLE],
  ['Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Chrome/131.0.0.0 Safari/537.36', GOOGLE],
  ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'Chrome/131.0.0.0 Safari/537.36', GOOGLE],
  ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) ' +
   'HeadlessChrome/131.0.0.0 Safari/537.36', GOOGLE],
  ['Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko', ''],
  ['Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)', ''],
  ['Mozilla/5.0 (compatible; MSIE 9.0; Windows Phone OS 7.5; Trident/5.0; IEMobile/9.0)', ''],
  ['Mozilla/5.0 (BB10; Touch) AppleWebKit/537.10+ (KHTML, like Gecko) Version/10.1.0.4633 Mobile Safari/537.10+',
   ''],
  ['Mozilla/5.0 (X11; Linux x86_64) KHTML/5.20.0 (like Gecko) Konqueror/5.20', ''],
  ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15 ' +
   'Epiphany/605.1.15', APPLE],
];

function windowFor(userAgent, vendor) {
  const location = {href: 'https://example.com/', hostname: 'example.com', pathname: '/', protocol: 'https:',
    search: ''};
  const win = {
    navigator: {userAgent: userAgent, vendor: vendor, onLine: true},
    document: {URL: location.href, referrer: '', title: '', location: location, cookie: '',
      createElement: function() { return {}; }},
    location: location,
    screen: {width: 0, height: 0},
    addEventListener: function() {}, removeEventListener: function() {}, dispatchEvent: function() {},
    CustomEvent: function() {},
  };
  if (/Presto\//.test(userAgent)) {
    win.opera = {};
  }
  return win;
}

function mixpanelProperties(script, userAgent, vendor) {
  const win = windowFor(userAgent, vendor);
  const context = {window: win, module: {exports: {}}, console: {log() {}, error() {}, warn() {}},
    setTimeout: setTimeout, clearTimeout: clearTimeout, Date: Date, Math: Math, JSON: JSON};
  context.exports = context.module.exports;
  context.self = win;
  vm.createContext(context);
  script.runInContext(context);
  const properties = context.module.exports._.info.properties();
  const named = {};
  for (const name of NAMED) {
    if (properties[name] !== undefined && properties[name] !== null) {
      named[name] = properties[name];
    }
  }
  return named;
}

function sampleByUserAgent() {
  const merged = new Map();
  for (const entry of SAMPLE) {
    const key = JSON.stringify([entry.userAgent, entry.vendor]);
    merged.set(key, (merged.get(key) || 0) + entry.weight);
  }
  return Array.from(merged, function(item) {
    const [userAgent, vendor] = JSON.parse(item[0]);
    return {userAgent: userAgent, vendor: vendor, weight: item[1]};
  }).sort(function(a, b) { return b.weight - a.weight; });
}

function main() {
  const script = new vm.Script(fs.readFileSync(MIXPANEL_BUILD, 'utf8'), {filename: path.basename(MIXPANEL_BUILD)});
  const rows = sampleByUserAgent().map(function(entry) {
    return {source: 'user-agents@' + SAMPLE_VERSION, ...entry};
  }).concat(EXTRA_USER_AGENTS.map(function(pair) {
    return {source: 'extra', userAgent: pair[0], vendor: pair[1], weight: 0};
  }));
  process.stdout.write(JSON.stringify({mixpanel_js: MIXPANEL_VERSION, sample: 'user-agents@' + SAMPLE_VERSION}) + '\n');
  for (const row of rows) {
    const expected = mixpanelProperties(script, row.userAgent, row.vendor);
    process.stdout.write(JSON.stringify({ua: row.userAgent, vendor: row.vendor, weight: row.weight,
      source: row.source, expected: expected}) + '\n');
  }
}

main();
