// Node on every socket pyboss passes (README: "Running popular servers"):
//   pyboss exec --listen 127.0.0.1:8080 --ready-probe / -- node server.js
// fd 3 is the app's listener; with --ready-probe the next one is pyboss's probe socket.
// SIGTERM stops accepting; connections in flight finish, then the process exits.
const http = require("http");

const generation = Number(process.env.PYBOSS_GENERATION || 0);
const count = Number(process.env.LISTEN_FDS || 0);

function hello(request, response) {
  const body = JSON.stringify({ generation: generation, pid: process.pid });
  response.writeHead(200, { "Content-Type": "application/json",
                            "Content-Length": Buffer.byteLength(body) });
  response.end(body);
}

const servers = [];
for (let fd = 3; fd < 3 + count; fd++) {
  servers.push(http.createServer(hello).listen({ fd: fd }));
}

process.on("SIGTERM", () => {
  for (const server of servers) {
    server.close();
  }
});
