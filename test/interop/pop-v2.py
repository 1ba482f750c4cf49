#!/usr/bin/env python3
"""An OpenAPI V2 (HMAC-SHA1) client written from the reference alone, in Python's standard library: a signer that
shares no code with ours or pop-core's. Usage: pop-v2.py ENDPOINT METHOD ACTION [NAME=VALUE ...]; the AccessKey pair
comes from ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET. Prints one JSON line:
{"status": <HTTP status>, "body": <the answer, parsed>}. With `--vector` it prints the reference's test-vector
signatures (GET and POST) instead, so the test can check this signer before trusting it."""
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


def percent_encode(value):
    # RFC 3986 unreserved characters stay; everything else is %XY of its UTF-8 bytes (space is %20, * is %2A).
    return urllib.parse.quote(value, safe='-_.~')


def sign(method, params, secret):
    canonical = '&'.join(percent_encode(k) + '=' + percent_encode(params[k]) for k in sorted(params))
    string_to_sign = method + '&' + percent_encode('/') + '&' + percent_encode(canonical)
    digest = hmac.new((secret + '&').encode('utf-8'), string_to_sign.encode('utf-8'), hashlib.sha1).digest()
    return base64.b64encode(digest).decode('ascii')


def vector():
    params = {
        'AccessKeyId': 'testid', 'Action': 'GetDeviceCredential', 'ClientId': 'GID_test@@@test', 'Format': 'JSON',
        'InstanceId': 'mqtt-cn-test', 'SignatureMethod': 'HMAC-SHA1',
        'SignatureNonce': '3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf', 'SignatureVersion': '1.0',
        'Timestamp': '2020-05-19T10:33:56Z', 'Version': '2020-04-20',
    }
    print(json.dumps({'GET': sign('GET', params, 'testsecret'), 'POST': sign('POST', params, 'testsecret')}))


def call(endpoint, method, action, pairs):
    params = {
        'Action': action, 'Version': '2020-04-20', 'Format': 'JSON',
        'AccessKeyId': os.environ['ALIBABA_CLOUD_ACCESS_KEY_ID'], 'SignatureMethod': 'HMAC-SHA1',
        'SignatureVersion': '1.0', 'SignatureNonce': str(uuid.uuid4()),
        'Timestamp': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
    }
    for pair in pairs:
        name, _, value = pair.partition('=')
        params[name] = value
    params['Signature'] = sign(method, params, os.environ['ALIBABA_CLOUD_ACCESS_KEY_SECRET'])
    encoded = '&'.join(percent_encode(k) + '=' + percent_encode(v) for k, v in params.items())
    if method == 'GET':
        request = urllib.request.Request(endpoint.rstrip('/') + '/?' + encoded, method='GET')
    else:
        request = urllib.request.Request(endpoint.rstrip('/') + '/', data=encoded.encode('ascii'), method='POST',
                                         headers={'Content-Type': 'application/x-www-form-urlencoded'})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, text = answer.status, answer.read().decode('utf-8')
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode('utf-8')
    print(json.dumps({'status': status, 'body': json.loads(text)}))


if __name__ == '__main__':
    if sys.argv[1:] == ['--vector']:
        vector()
    else:
        call(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
