// What the example assumes the app has: a function that returns an access token. This test app
// was handed one in its URL fragment.
function getAccessToken() {
  return new URLSearchParams(location.hash.slice(1)).get('token');
}
