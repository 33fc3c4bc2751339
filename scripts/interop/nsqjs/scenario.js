// nsqjs 0.13.0 Writer and Reader against one nsqd (found through nsqlookupd), in one of three
// stream modes. Exploratory: run by run.sh, not by `make test`.
//
// Usage: node scenario.js MODE NSQD_TCP LOOKUPD_HTTP TOPIC
//   MODE is plain, snappy or deflate; NSQD_TCP is host:port; LOOKUPD_HTTP is host:port.
// Prints one JSON line with what was sent and received; exits 0 only if every message arrived
// exactly as expected (bodies, attempts, the requeue and the deferral).
'use strict'

const nsq = require('nsqjs')

const [mode, nsqdAddress, lookupdAddress, topic] = process.argv.slice(2)
if (!['plain', 'snappy', 'deflate'].includes(mode) || !topic) {
  console.error('usage: node scenario.js plain|snappy|deflate NSQD_TCP LOOKUPD_HTTP TOPIC')
  process.exit(2)
}
const [nsqdHost, nsqdPort] = nsqdAddress.split(':')
const streamOptions = mode === 'plain' ? {} : {[mode]: true}
const started = Date.now()
const report = {mode, topic, answers: [], errors: [], received: [], identify: null}

const big = Buffer.alloc(200 * 1024)
for (let i = 0; i < big.length; i++) big[i] = i % 251
const singles = ['single-text', Buffer.from([0, 1, 2, 255]), big, {json: 'object'}]
const batch = Array.from({length: 20}, (_, i) => `mpub-${String(i).padStart(2, '0')}`)

function describe(body) {
  if (body.length > 64) return `<${body.length} bytes, sum ${body.reduce((a, b) => (a + b) % 65536, 0)}>`
  return body.toString('latin1')
}

const expected = [
  'single-text',
  describe(Buffer.from([0, 1, 2, 255])),
  describe(big),
  '{"json":"object"}',
  ...batch,
  'requeue-me',
  'deferred',
]

function finish(code) {
  report.elapsed_ms = Date.now() - started
  process.stdout.write(JSON.stringify(report) + '\n')
  process.exit(code)
}

const deadline = setTimeout(() => {
  report.errors.push('timed out after 15 s')
  finish(1)
}, 15000)

function publish(writer, method, ...args) {
  return new Promise((resolve) => {
    writer[method](topic, ...args, (err) => {
      report.answers.push(err ? `ERROR ${err.message}` : 'OK')
      resolve()
    })
  })
}

async function waitForLookup() {
  for (let i = 0; i < 100; i++) {
    try {
      const response = await fetch(`http://${lookupdAddress}/lookup?topic=${topic}`)
      if (response.ok) {
        const body = await response.json()
        if ((body.producers || []).length > 0) return body
      }
    } catch (e) {
      // nsqlookupd not answering yet: try again.
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error('nsqlookupd never listed a producer')
}

function consume() {
  const reader = new nsq.Reader(topic, 'ch', {
    lookupdHTTPAddresses: [lookupdAddress],
    maxInFlight: 5,
    ...streamOptions,
  })
  const deferredAt = {}
  reader.on('error', (err) => report.errors.push(`reader: ${err.message}`))
  reader.on('nsqd_connected', (host, port) => (report.reader_connected = `${host}:${port}`))
  reader.on('message', (msg) => {
    const body = describe(msg.body)
    report.received.push([body, msg.attempts, msg.id])
    if (body === 'requeue-me' && msg.attempts === 1) {
      deferredAt.requeue = Date.now()
      msg.requeue(300, false)
      return
    }
    if (body === 'requeue-me') report.requeue_delay_ms = Date.now() - deferredAt.requeue
    if (body === 'deferred') report.deferred_after_ms = Date.now() - deferredAt.deferred
    msg.finish()
    const bodies = report.received.filter((r) => r[1] === 1 || r[0] === 'requeue-me').map((r) => r[0])
    if (bodies.length === expected.length + 1) {
      clearTimeout(deadline)
      setTimeout(() => {
        reader.close()
        const firsts = report.received.filter((r) => r[1] === 1).map((r) => r[0]).sort()
        const ok =
          JSON.stringify(firsts) === JSON.stringify([...expected].sort()) &&
          report.received.length === expected.length + 1 &&
          report.received.filter((r) => r[0] === 'requeue-me').map((r) => r[1]).join() === '1,2' &&
          report.requeue_delay_ms >= 290 &&
          report.deferred_after_ms >= 990 &&
          report.answers.every((a) => a === 'OK') &&
          report.errors.length === 0
        report.ok = ok
        finish(ok ? 0 : 1)
      }, 300)
    }
  })
  return {reader, deferredAt}
}

const writer = new nsq.Writer(nsqdHost, Number(nsqdPort), streamOptions)
writer.on('error', (err) => report.errors.push(`writer: ${err.message}`))
writer.on('ready', async () => {
  const {maxRdyCount, maxMsgTimeout, msgTimeout, nsqdVersion} = writer.conn
  report.identify = {maxRdyCount, maxMsgTimeout, msgTimeout, nsqdVersion}
  for (const single of singles) await publish(writer, 'publish', single)
  await publish(writer, 'publish', batch)
  await publish(writer, 'publish', 'requeue-me')
  const deferredPublishedAt = Date.now()
  // nsqjs 0.13.0 documents a single message here but throws unless it is wrapped in an array.
  await publish(writer, 'deferPublish', ['deferred'], 1000)
  report.lookup = await waitForLookup()
  const {reader, deferredAt} = consume()
  deferredAt.deferred = deferredPublishedAt
  reader.connect()
})
writer.connect()
