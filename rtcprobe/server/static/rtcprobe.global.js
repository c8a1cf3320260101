// rtcprobe.global.js: rtcprobe.js for a plain <script> tag (docs/browser.md#from-a-script-tag).
//
//   <script src="https://probe.example.com/rtcprobe.global.js"></script>
//   const preflightTest = rtcprobe.runPreflight(token);
//   rtcprobe.connect(token, {networkQuality: {local: 1, remote: 1}}).then((room) => ...);
//
// A file cannot be both an ES module (with `export`) and a classic script, so this one is a
// small classic script that loads the module next to it with a dynamic import() and hands out
// its runPreflight. There is one implementation: this file only bridges the few milliseconds the
// import takes, recording listeners and a stop() until the real test object exists.
(function () {
  'use strict';
  var script = document.currentScript;
  var base = script && script.src ? script.src : document.baseURI;
  var loading = null;

  /** The rtcprobe.js module (loaded once). */
  function load() {
    if (loading === null) loading = import(new URL('rtcprobe.js', base).href);
    return loading;
  }

  function PendingTest() {
    this._test = null;
    this._calls = [];
  }
  ['on', 'off', 'once', 'addListener', 'removeListener', 'removeAllListeners'].forEach(function (name) {
    PendingTest.prototype[name] = function () {
      if (this._test) this._test[name].apply(this._test, arguments);
      else this._calls.push([name, Array.prototype.slice.call(arguments)]);
      return this;
    };
  });
  PendingTest.prototype.stop = function () {
    if (this._test) this._test.stop();
    else this._calls.push(['stop', []]);
  };
  Object.defineProperty(PendingTest.prototype, 'networkQualityLevel', {
    get: function () { return this._test ? this._test.networkQualityLevel : null; },
  });
  Object.defineProperty(PendingTest.prototype, 'report', {
    get: function () { return this._test ? this._test.report : null; },
  });
  PendingTest.prototype._attach = function (test) {
    this._test = test;
    this._calls.forEach(function (call) { test[call[0]].apply(test, call[1]); });
    this._calls = [];
  };
  PendingTest.prototype._fail = function (error) {
    // The module did not load (or refused the options): the same `failed` a test would emit.
    var listeners = this._calls.filter(function (c) { return (c[0] === 'on' || c[0] === 'once') && c[1][0] === 'failed'; });
    var err = error instanceof Error ? error : new Error(String(error));
    listeners.forEach(function (c) { c[1][1](err, null); });
  };

  function runPreflight(token, options) {
    var pending = new PendingTest();
    load().then(function (mod) {
      var test;
      try {
        test = mod.runPreflight(token, options);
      } catch (err) {
        pending._fail(err);
        return;
      }
      pending._attach(test);
    }, function (err) {
      var error = new Error('could not load rtcprobe.js: ' + (err && err.message));
      error.code = 53000;
      error.name = 'SignalingConnectionError';
      pending._fail(error);
    });
    return pending;
  }

  /** rtcprobe.js's connect(): a promise already, so it only waits for the module first. */
  function connect(token, options) {
    return load().then(function (mod) { return mod.connect(token, options); });
  }

  window.rtcprobe = { runPreflight: runPreflight, connect: connect, load: load };
})();
