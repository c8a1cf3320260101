// Twilio Video's documented preflight example, for a page that loads the SDK from a script tag,
// with one line changed: Twilio's reads `const runPreflight = Twilio.Video.runPreflight;`.
// (A classic script: the example's code runs unchanged after that line.)
const runPreflight = rtcprobe.runPreflight;

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
