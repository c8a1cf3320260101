// Twilio Video's documented preflight example (its "Preflight API" guide;
// docs/references.md#twilio-video-preflight) as a web app runs it, with one line changed: the
// import. Twilio's reads `const { runPreflight } = require('twilio-video');` -- here the name
// 'rtcprobe' is mapped to the server's /rtcprobe.js by the page's import map.
import { runPreflight } from 'rtcprobe';

const token = getAccessToken();

const preflightTest = runPreflight(token);

preflightTest.on('progress', (progress) => {
  console.log('preflight progress:', progress);
});

preflightTest.on('failed', (error, report) => {
  console.error('preflight error:', error);
  console.log('Received partial report:', report);
});

preflightTest.on('completed', (report) => {
  console.log("Test completed in " + report.testTiming.duration + " milliseconds.");
  console.log(" It took " + report.networkTiming.connect?.duration + " milliseconds to connect");
  console.log(" It took " + report.networkTiming.media?.duration + " milliseconds to receive media");
});
